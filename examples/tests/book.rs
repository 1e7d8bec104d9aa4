//! The book's runnable command blocks, run as a reader would on a fresh clone: every block of
//! `book/src/*.md` whose info string has the `runnable` attribute (```` ```console,runnable ````
//! or ```` ```sh,runnable ````), chapter by chapter, each chapter in a fresh directory, its
//! commands in order. `cargo run --example NAME -- …` runs the example's binary built for this
//! test; `cargo build` and `cargo test` lines are skipped (the binaries are built already).
//!
//! In a `console` block, the commands are the lines that start with `$ `, and the lines after
//! one are what it prints: each command must exit with 0, and print the first of those lines
//! (spaces aside). In an `sh` block every line is a command. A comment starts at `  #`.
//!
//! A block that cannot run on a fresh clone (one that needs the network, a second terminal or
//! a path of the reader's) is left without the attribute.

mod shell;

use std::path::{Path, PathBuf};

/// One command of a runnable block, and the first line the book shows it printing.
#[derive(Debug)]
struct Step {
    command: String,
    first_line: Option<String>,
}

/// The steps of the runnable blocks of one chapter, in order.
fn runnable_steps(markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut block: Option<bool> = None; // Some(is_console) inside a runnable block
    let mut fence_open = false;
    let mut awaiting_output = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            if fence_open {
                fence_open = false;
                block = None;
            } else {
                fence_open = true;
                let mut attrs = trimmed.trim_start_matches('`').split(',').map(str::trim);
                let lang = attrs.next().unwrap_or_default();
                if attrs.any(|a| a == "runnable") {
                    assert!(matches!(lang, "console" | "sh"), "a runnable block is `console` or `sh`, not `{lang}`");
                    block = Some(lang == "console");
                }
            }
            awaiting_output = false;
            continue;
        }
        let Some(is_console) = block else { continue };
        let command = if is_console { line.strip_prefix("$ ") } else { Some(line) };
        match command {
            Some(command) => {
                let command = command.split("  #").next().unwrap().trim();
                if !command.is_empty() {
                    steps.push(Step { command: command.to_owned(), first_line: None });
                    awaiting_output = true;
                }
            }
            None if awaiting_output => {
                if let Some(step) = steps.last_mut() {
                    step.first_line = Some(line.to_owned());
                }
                awaiting_output = false;
            }
            None => {}
        }
    }
    steps
}

/// `text` with every run of whitespace made one space.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs the steps of `chapter` in a fresh directory; panics at the first that does not do what
/// the book says.
fn run_chapter(chapter: &str, steps: &[Step]) {
    let bins = shell::examples_dir();
    let dir = tempfile::tempdir().unwrap();
    let mut killed_run_finished = false;
    for (i, step) in steps.iter().enumerate() {
        let command = &step.command;
        if command.starts_with("cargo build") || command.starts_with("cargo test") {
            continue;
        }
        let line = shell::with_binaries(command, &bins);
        assert!(!line.contains("cargo "), "{chapter}: a command this test cannot run: {command}");
        let (code, output) = shell::run_line(dir.path(), i, &line);
        let context = format!("{chapter}: `{command}` exited with {code:?}:\n{output}");
        // A run the book kills half-way may finish first on a fast machine: then there is
        // nothing to see interrupted, nor to recover.
        let after_kill = killed_run_finished && (command.contains("recover") || command.contains("show 3"));
        if command.starts_with("timeout -s KILL") {
            killed_run_finished = code == Some(0);
            assert!(matches!(code, Some(0 | 137)), "{context}");
            continue;
        } else if after_kill && command.contains("recover") {
            assert_eq!(code, Some(2), "{context}");
            continue;
        }
        assert_eq!(code, Some(0), "{context}");
        if let Some(first) = &step.first_line
            && first.trim() != "…"
            && !after_kill
        {
            // On a loaded machine the kill may land before the workflow's body started: then
            // `recover` starts its first attempt, not its second.
            let first_attempt = first.strip_suffix(" (attempt 2)").filter(|_| command.contains("recover"));
            assert!(
                squash(&output).contains(&squash(first))
                    || first_attempt.is_some_and(|f| output.lines().next().is_some_and(|l| l.trim() == f.trim())),
                "{chapter}: `{command}` does not print `{first}`:\n{output}"
            );
        }
    }
}

#[test]
fn the_book_commands_do_what_it_says() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src");
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    let mut ran = Vec::new();
    for path in chapters {
        let chapter = path.file_name().unwrap().to_string_lossy().into_owned();
        let steps = runnable_steps(&std::fs::read_to_string(&path).unwrap());
        if !steps.is_empty() {
            run_chapter(&chapter, &steps);
            ran.push((chapter, steps.len()));
        }
    }
    // The chapters known to have runnable blocks: a marker lost in an edit fails here.
    for chapter in ["gradient.md", "introduction.md", "tutorial.md", "writing-tasks.md"] {
        assert!(ran.iter().any(|(c, _)| c == chapter), "no runnable block in {chapter}: {ran:?}");
    }
}

#[test]
fn runnable_blocks_are_parsed_into_commands_and_first_lines() {
    let md = "text\n\n```console,runnable\n$ a --x  # note\nout 1\nout 2\n$ b\n```\n\n```console\n$ skipped\n```\n\n```sh,runnable\nc\n\nd  # two\n```\n";
    let steps: Vec<(String, Option<String>)> =
        runnable_steps(md).into_iter().map(|s| (s.command, s.first_line)).collect();
    assert_eq!(
        steps,
        [
            ("a --x".to_owned(), Some("out 1".to_owned())),
            ("b".to_owned(), None),
            ("c".to_owned(), None),
            ("d".to_owned(), None)
        ]
    );
}
