//! Helpers shared by the integration tests that start `salt` servers, workers and example
//! binaries as processes.

// Each test file uses its own share of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `salt` binary of this package.
pub(crate) const SALT: &str = env!("CARGO_BIN_EXE_salt");

/// The target directory's profile (`target/debug`) the tests run from.
pub(crate) fn profile() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    // target/debug/deps/NAME-HASH → target/debug
    exe.parent().and_then(Path::parent).expect("a target directory").to_path_buf()
}

/// The example binary `name` of the package `package`, built when missing.
pub(crate) fn example(package: &str, name: &str) -> PathBuf {
    let binary = profile().join("examples").join(name);
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build an example");
        assert!(status.success(), "building the {name} example failed");
    }
    assert!(binary.exists(), "no {}", binary.display());
    binary
}

/// A port free on loopback now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process's exit status, stdout and stderr, for an assertion's message.
#[allow(unused_imports)]
pub(crate) use salt_testkit::text;

/// Kills `child` with SIGKILL and reaps it.
pub(crate) fn kill9(child: &mut Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait();
}

/// Waits (up to 60 s) until the server at `url` answers `/healthz`; whether it did.
pub(crate) fn wait_healthy(url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(&format!("{url}/healthz")).call().is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
