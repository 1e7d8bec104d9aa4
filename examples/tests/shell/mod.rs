//! Running the commands the README and the book show, against the example binaries built for
//! the tests: shared by `readme.rs` and `book.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where cargo puts the examples next to this test binary.
pub(crate) fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("examples")
}

/// `command` with the example binaries this test built in place of `cargo run --example NAME`.
pub(crate) fn with_binaries(command: &str, bins: &Path) -> String {
    let mut out = command.replace("target/debug/examples/", &format!("{}/", bins.display()));
    while let Some(at) = out.find("cargo run --example ") {
        let rest = &out[at + "cargo run --example ".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let mut end = at + "cargo run --example ".len() + name.len();
        if out[end..].starts_with(" --") {
            end += " --".len();
        }
        out.replace_range(at..end, &bins.join(&name).display().to_string());
    }
    out
}

/// Runs `line` with `sh -c` in `dir`, as command number `i`: its exit code and what it printed
/// (stdout and stderr, through a file: a command left running in the background keeps it open).
pub(crate) fn run_line(dir: &Path, i: usize, line: &str) -> (Option<i32>, String) {
    let log = dir.join(format!("command-{i}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env_remove("SALT_DB")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    (status.code(), std::fs::read_to_string(&log).unwrap())
}
