//! The README's command blocks, run in order as a newcomer would after cloning: each
//! `cargo run --example NAME -- …` runs the example's binary built for this test, in a fresh
//! directory, and must do what the README says.

mod shell;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The lines of the README's `sh` blocks, without their comments.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in readme.lines() {
        match (in_block, line.trim_start().starts_with("```")) {
            (false, true) => in_block = line.trim() == "```sh",
            (true, true) => in_block = false,
            (true, false) => {
                // A comment starts at `  #` (no command here has a `#` of its own).
                let command = line.split("  #").next().unwrap().trim();
                if !command.is_empty() {
                    commands.push(command.to_string());
                }
            }
            (false, false) => {}
        }
    }
    commands
}

#[test]
fn the_readme_commands_do_what_it_says() {
    let bins = shell::examples_dir();
    let dir = tempfile::tempdir().unwrap();
    let commands = readme_commands();
    assert!(commands.len() > 10, "the README's command blocks were not found: {commands:?}");
    let mut killed_run_finished = false;
    for (i, command) in commands.iter().enumerate() {
        if command.starts_with("cargo test") {
            continue;
        }
        let line = shell::with_binaries(command, &bins);
        assert!(!line.contains("cargo "), "a command this test cannot run: {command}");
        let (code, output) = shell::run_line(dir.path(), i, &line);
        if command.starts_with("timeout -s KILL") {
            // Killed half-way, as the README shows; on a very fast machine it may finish first.
            killed_run_finished = code == Some(0);
            assert!(matches!(code, Some(0 | 137)), "{command}: {code:?}\n{output}");
        } else if command.contains("recover") && killed_run_finished {
            assert_eq!(code, Some(2), "{command}: a run that finished has nothing to recover\n{output}");
        } else {
            assert_eq!(code, Some(0), "{command}\n{output}");
        }
    }
    // The approval run, signalled by the README, ends.
    let approval = bins.join("approval");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out =
            Command::new(&approval).args(["runs"]).current_dir(dir.path()).env_remove("SALT_DB").output().unwrap();
        let runs = String::from_utf8_lossy(&out.stdout);
        if runs.contains("succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "the approval run did not end: {runs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
