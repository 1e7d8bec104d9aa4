//! A throwaway PostgreSQL server for tests, and a fresh database per test.
//!
//! - `SALT_TEST_POSTGRES=postgres://USER@HOST:PORT/DB`: use that server (databases are created
//!   on it with `CREATE DATABASE`);
//! - otherwise, the first call starts a server of this process: `initdb` into a temporary
//!   directory (as the `postgres` user when run as root, since `initdb` refuses root), then
//!   `postgres` on `127.0.0.1` and a free port, with `fsync` off. A watchdog shell stops it
//!   (fast shutdown) and removes its directory as soon as this process is gone.
//!
//! Where there is neither, [`server`] and [`database`] panic, saying what to install: the tests
//! that call them are `#[ignore = "needs PostgreSQL …"]`, run with `cargo test -- --ignored`
//! (`.ci/run` does) where PostgreSQL is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A server tests can create databases on.
#[derive(Debug, Clone)]
pub struct Server {
    /// `postgres://USER@HOST:PORT` (no database).
    base: String,
    /// Where the server's data and log are, when this process started it.
    dir: Option<PathBuf>,
    /// Its port, when this process started it.
    port: u16,
}

impl Server {
    /// The server's URL without a database name.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// The server's log file, when this process started the server.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("log"))
    }

    /// Stops the server (fast shutdown: every connection is closed) and starts it again on the
    /// same port and data, as a database restart in production would; returns once it answers
    /// again. Only for a server this process started. It stays down for `down` in between.
    pub fn restart(&self, down: Duration) -> Result<(), String> {
        let dir = self.dir.as_ref().ok_or("only a server started by the tests can be restarted")?;
        let bin = binaries().ok_or("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")?;
        let pid_file = dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file).map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let pid = pid.lines().next().and_then(|l| l.trim().parse::<i32>().ok()).ok_or("no pid in postmaster.pid")?;
        run(Command::new("kill").args(["-INT", &pid.to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while pid_file.exists() {
            if Instant::now() > deadline {
                return Err("postgres did not stop".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down);
        let start = "\"$1\" -D \"$2/data\" -p \"$3\" -k \"$2\" -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
             </dev/null >>\"$2/log\" 2>&1 &";
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--", "sh"]);
            cmd
        } else {
            Command::new("sh")
        };
        cmd.args(["-c", start, "restart"])
            .arg(bin.join("postgres"))
            .arg(dir)
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        run(&mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.psql("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(format!("postgres did not start again: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs one SQL statement on database `postgres` with `psql`, returning what it printed.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .arg(self.url("postgres"))
            .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The test server, started on first use. Panics, saying why and what to install, when there is
/// none.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(start) {
        Ok(server) => server,
        Err(why) => panic!(
            "no PostgreSQL server for the tests here: {why}; install Debian's `postgresql` \
             (its server binaries, under /usr/lib/postgresql/*/bin) or set \
             SALT_TEST_POSTGRES=postgres://USER@HOST:PORT"
        ),
    }
}

/// A fresh, empty database named after `hint` on the test server, as a `postgres://` URL. Panics
/// as [`server`] does when there is no server.
pub fn database(hint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = server();
    let clean: String =
        hint.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(30).collect();
    let name = format!("salt_{clean}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    if let Err(e) = server.psql(&format!("CREATE DATABASE {name}")) {
        panic!("{e}");
    }
    server.url(&name)
}

fn start() -> Result<Server, String> {
    if let Ok(url) = std::env::var("SALT_TEST_POSTGRES") {
        let base = url.trim_end_matches('/');
        // Strip a database name, if the URL has one.
        let base = match base.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('/') {
                Some((authority, _)) => format!("{scheme}://{authority}"),
                None => base.to_string(),
            },
            None => return Err(format!("SALT_TEST_POSTGRES is not a URL: {url}")),
        };
        let server = Server { base, dir: None, port: 0 };
        server.psql("SELECT 1")?;
        return Ok(server);
    }
    let bin = binaries().ok_or("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("salt-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if root {
        run(Command::new("chown").args(["postgres:postgres"]).arg(&dir))?;
    }
    let as_owner = |program: &Path| {
        if root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    };
    run(as_owner(&bin.join("initdb")).arg("-D").arg(dir.join("data")).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
    ]))?;
    let port = free_port()?;
    // The server runs under a watchdog that holds the read end of a pipe whose write end
    // only this process has: when this process is gone (tests done, or killed), the read ends
    // and the watchdog stops the server and removes its directory.
    // The server is stopped through its pid file: after a [`Server::restart`] it is another
    // process than the one started here.
    let script = r#"
        "$1" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
             </dev/null >"$2/log" 2>&1 &
        cat >/dev/null
        pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null)
        [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null
        while [ -e "$2/data/postmaster.pid" ]; do sleep 0.1; done
        rm -rf "$2"
    "#;
    let mut watchdog = as_owner(Path::new("sh"));
    watchdog
        .args(["-c", script, "watchdog"])
        .arg(bin.join("postgres"))
        .arg(&dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = watchdog.spawn().map_err(|e| format!("cannot start postgres: {e}"))?;
    // The write end stays open for the rest of this process's life.
    std::mem::forget(child.stdin.take());
    let server = Server { base: format!("postgres://postgres@127.0.0.1:{port}"), dir: Some(dir.clone()), port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match server.psql("SELECT 1") {
            Ok(_) => return Ok(server),
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                return Err(format!("postgres did not start: {e}\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with `initdb` and `postgres` in it.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn a_fresh_database_answers_queries() {
        let url = super::database("testkit");
        let out = std::process::Command::new("psql").arg(&url).args(["-Atc", "SELECT current_database()"]).output();
        let out = out.expect("psql runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let name = String::from_utf8_lossy(&out.stdout);
        assert!(url.ends_with(name.trim()), "{url} vs {name}");
    }
}
