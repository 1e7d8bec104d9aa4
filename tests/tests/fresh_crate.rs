//! A new project as a user starts it: a crate outside this workspace whose only dependencies
//! are `salt` and `serde`, with derived task values, built and run through its own command line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root, where `salt/` is.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the workspace").to_path_buf()
}

/// Where the fresh crate is built: a directory of its own inside this workspace's target
/// directory, kept between runs so that salt's dependencies are compiled once.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/fresh_crate-HASH
    let target = exe.ancestors().nth(3).expect("the test binary is in a target directory");
    target.join("fresh-crate")
}

const MAIN: &str = r#"use salt::prelude::*;

/// One line of an order.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Line {
    item: String,
    quantity: u32,
    price_cents: u64,
}

/// What an order costs.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Total {
    lines: usize,
    total_cents: u64,
}

/// How a line is priced.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Pricing {
    Retail,
    Wholesale,
}

/// Prices one line.
#[task(retries = 1)]
async fn price(line: Line, pricing: Pricing) -> u64 {
    let cents = u64::from(line.quantity) * line.price_cents;
    match pricing {
        Pricing::Retail => cents,
        Pricing::Wholesale => cents * 9 / 10,
    }
}

/// Prices every line of an order, one node each, and adds them up.
#[workflow]
async fn order(lines: Vec<Line>, pricing: Pricing) -> salt::Result<Total> {
    let count = lines.len();
    let prices = salt::join_all(lines.into_iter().map(|line| price(line, pricing))).await?;
    Ok(Total { lines: count, total_cents: prices.into_iter().sum() })
}

fn main() -> std::process::ExitCode {
    salt::main()
}
"#;

#[test]
fn a_crate_with_only_salt_and_serde_builds_and_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("shop");
    std::fs::create_dir_all(root.join("src")).unwrap();
    let salt = workspace().join("salt");
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"shop\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n\
             salt = {{ path = {salt:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n",
            salt = salt.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(root.join("src/main.rs"), MAIN).unwrap();
    // The workspace's lock file: the same versions of the dependencies, already downloaded.
    std::fs::copy(workspace().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();

    let target = target_dir();
    let build = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(build.status.success(), "the fresh crate does not build:\n{}", String::from_utf8_lossy(&build.stderr));

    let input = r#"{"lines": [{"item": "tea", "quantity": 3, "price_cents": 350}, {"item": "cake", "quantity": 1, "price_cents": 450}], "pricing": "wholesale"}"#;
    let run = Command::new(target.join("debug/shop"))
        .args(["run", "order", "--input", input])
        .current_dir(&root)
        .env_remove("SALT_DB")
        .output()
        .expect("run the fresh crate's binary");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let output: serde_json::Value = serde_json::from_str(&stdout).expect("`run` prints the output as JSON");
    assert_eq!(output, serde_json::json!({"lines": 2, "totalCents": 1350}));
    assert!(stderr.contains("run 1: 3 succeeded"), "{stderr}");

    // The run's input, outputs and logs are the user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root.join(".salt")), 0o700);
    assert_eq!(mode(&root.join(".salt/salt.db")), 0o600);

    // The derived schemas are the input's: a wrong value of the enum is refused before the run.
    let bad = Command::new(target.join("debug/shop"))
        .args(["run", "order", "--input", r#"{"lines": [], "pricing": "cheap"}"#])
        .current_dir(&root)
        .env_remove("SALT_DB")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}
