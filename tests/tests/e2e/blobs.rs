//! Values larger than a protocol message: stored once beside the database, passed by reference.

use crate::support::{Env, text};

/// The length of the JSON of `big_make(mb)`: `mb * 1000` strings of 1000 bytes, commas, brackets.
fn json_len(mb: u64) -> u64 {
    mb * 1000 * 1001 + 1
}

/// The files in the database's blob directory.
fn blob_files(env: &Env) -> Vec<std::path::PathBuf> {
    let dir = env.db.with_file_name("salt.db.blobs");
    std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

/// The bytes of the database and its write-ahead log.
fn db_bytes(env: &Env) -> u64 {
    ["salt.db", "salt.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(env.db.with_file_name(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// A value over the 64 MiB message cap on the process executors, a 2 MB one in process: three
/// nodes pass it on (by handle, as an awaited output, as an argument), it is stored once, the
/// database stays small, and `show --output` prints it whole.
#[test]
fn large_values_pass_by_reference_and_are_stored_once() {
    for (executor, mb) in [("inline", 2), ("process", 70), ("pool", 70)] {
        let env = Env::new();
        let input = serde_json::json!({"mb": mb}).to_string();
        let out = env.run(&["run", "big_values", "--input", &input, "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), json_len(mb).to_string(), "{executor}");

        let files = blob_files(&env);
        assert_eq!(files.len(), 1, "{executor}: one blob for one value: {files:?}");
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), json_len(mb), "{executor}");
        let bytes = db_bytes(&env);
        assert!(bytes < 1 << 20, "{executor}: the database holds {bytes} bytes");

        // `show` reads the value back, whole: the output of `big_make` (node 1)...
        let out = env.run(&["show", "1", "big_make", "--output"]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        let rows: Vec<String> = serde_json::from_slice(&out.stdout).expect("the output as JSON");
        assert_eq!(rows.len() as u64, mb * 1000, "{executor}");
        assert_eq!(rows[7], format!("{:0>998}", 7), "{executor}");
        // ...and the argument `big_len` was given by value.
        let out = env.run(&["show", "1", "big_len", "--input"]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        let input: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the input as JSON");
        assert_eq!(input["rows"].as_array().map(Vec::len), Some(mb as usize * 1000), "{executor}");
        // The summary of a run with large values stays readable.
        let show = env.show(1);
        assert_eq!(show["run"]["output"], json_len(mb), "{executor}");
    }
}

/// A database moved without its blob directory says what is missing instead of showing wrong
/// values.
#[test]
fn a_database_without_its_blobs_says_so() {
    let env = Env::new();
    let out = env.run(&["run", "big_values", "--input", r#"{"mb": 2}"#]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_dir_all(env.db.with_file_name("salt.db.blobs")).unwrap();
    let out = env.run(&["show", "1", "big_make", "--output"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is missing") && err.contains("`.blobs` directory must be copied or moved with it"), "{err}");
    // Listing runs never reads blobs.
    let out = env.run(&["runs"]);
    assert!(out.status.success(), "{}", text(&out));
}
