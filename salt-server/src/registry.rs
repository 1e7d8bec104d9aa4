//! The registry of workflow binaries: each binary is stored once, content-addressed by its
//! sha256, under `DATA/binaries/`; each workflow it holds gets a new version when the binary
//! or the workflow's manifest changed.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sql::Conn;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use salt_runtime::model::now_ms;

use crate::config::{SaltToml, WorkflowSettings};
use crate::db;

/// How long a binary may take to print its manifest.
pub const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a binary was not registered. Nothing is stored when registering fails.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The file is not a salt workflow binary: it does not run, or `manifest --json` does not
    /// print a manifest.
    #[error("not a salt workflow binary: {0}")]
    NotSalt(String),
    /// The binary printed a manifest that is not valid.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] crate::sql::Error),
    /// The `salt.toml` given with the binary cannot be used with it.
    #[error("{0}")]
    Config(String),
}

/// What registering a binary did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Registered {
    /// The binary's sha256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: i64,
    /// Whether the registry did not hold it before.
    pub new_binary: bool,
    /// Each workflow it holds, with its version now.
    pub workflows: Vec<RegisteredWorkflow>,
}

/// A workflow of a registered binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RegisteredWorkflow {
    /// Its name.
    pub workflow: String,
    /// Its version: a new one, or the latest when nothing changed.
    pub version: i64,
    /// Whether this registration recorded a new version.
    pub new_version: bool,
}

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where the registry under `data` keeps the binary of sha256 `sha`.
pub fn binary_path(data: &Path, sha: &str) -> PathBuf {
    data.join("binaries").join(sha)
}

/// Whether `text` is a sha256 in lowercase hex (a registry name; never a path).
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The ELF machine (`e_machine`) of this platform's executables, if salt knows it.
fn elf_machine() -> Option<u16> {
    match std::env::consts::ARCH {
        "x86_64" => Some(62),
        "aarch64" => Some(183),
        "x86" => Some(3),
        "arm" => Some(40),
        "riscv64" => Some(243),
        "powerpc64" => Some(21),
        "s390x" => Some(22),
        _ => None,
    }
}

/// Checks, without running it, that `bytes` look like a salt workflow binary for this
/// platform: an ELF executable of this machine's class, byte order and architecture that
/// holds [`MANIFEST_MARKER`](salt_runtime::ops::MANIFEST_MARKER). An uploaded file is checked
/// so before the server runs it to read its manifest.
pub fn check_binary(bytes: &[u8]) -> Result<(), RegisterError> {
    let not = |why: &str| Err(RegisterError::NotSalt(why.to_string()));
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return not("it is not an ELF executable (a salt workflow binary is one); nothing was run");
    }
    let class = if cfg!(target_pointer_width = "64") { 2 } else { 1 };
    let data = if cfg!(target_endian = "little") { 1 } else { 2 };
    if bytes[4] != class || bytes[5] != data {
        return not("it is an ELF file of another word size or byte order than this server's; nothing was run");
    }
    let half = |at: usize| {
        let two = [bytes[at], bytes[at + 1]];
        if data == 1 { u16::from_le_bytes(two) } else { u16::from_be_bytes(two) }
    };
    // ET_EXEC, or ET_DYN (a position-independent executable).
    if !matches!(half(16), 2 | 3) {
        return not("it is an ELF file but not an executable; nothing was run");
    }
    if elf_machine().is_some_and(|m| m != half(18)) {
        return Err(RegisterError::NotSalt(format!(
            "it is an executable for another architecture than this server's ({}); nothing was run",
            std::env::consts::ARCH
        )));
    }
    let marker = salt_runtime::ops::MANIFEST_MARKER.as_bytes();
    let found = regex::bytes::Regex::new(&regex::escape(salt_runtime::ops::MANIFEST_MARKER))
        .map(|r| r.is_match(bytes))
        .unwrap_or_else(|_| bytes.windows(marker.len()).any(|w| w == marker));
    if !found {
        return not("it is an executable but not one built with salt (no salt manifest in it); nothing was run");
    }
    Ok(())
}

/// The variables a binary reading its manifest keeps from the server's environment: none of
/// the server's secrets (database URLs, tokens, cloud credentials) are passed on.
const KEPT_ENV: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "TMPDIR"];

/// Runs the binary at `path` with `manifest --json` and returns what it printed, at most
/// `timeout` later (then it and whatever it started are killed). It runs in a scratch
/// directory, in a process group of its own, with an environment cleared but for a few basics
/// ([`KEPT_ENV`]).
pub fn read_manifest(path: &Path, timeout: Duration) -> Result<Value, RegisterError> {
    use std::os::unix::process::CommandExt as _;
    let scratch =
        tempfile::tempdir().map_err(|e| RegisterError::Io(format!("cannot create a scratch directory: {e}")))?;
    let mut child = spawn_retrying(|| {
        let mut cmd = Command::new(path);
        cmd.args(["manifest", "--json"])
            .current_dir(scratch.path())
            .env_clear()
            .env("SALT_DB", scratch.path().join("salt.db"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in KEPT_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.spawn()
    })
    .map_err(|e| RegisterError::NotSalt(format!("cannot run {}: {e}", path.display())))?;
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(64 * 1024).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill_group(&mut child);
                return Err(RegisterError::NotSalt(format!(
                    "`{} manifest --json` did not finish within {timeout:?}",
                    path.display()
                )));
            }
            Err(e) => return Err(RegisterError::Io(format!("waiting for {}: {e}", path.display()))),
        }
    };
    // What it started and left behind goes with it (it may hold its output open, too).
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).trim().to_string();
    if !status.success() {
        let why = if stderr.is_empty() { String::new() } else { format!(": {stderr}") };
        return Err(RegisterError::NotSalt(format!("`manifest --json` exited with {status}{why}")));
    }
    serde_json::from_slice(&stdout)
        .map_err(|e| RegisterError::NotSalt(format!("`manifest --json` did not print a JSON manifest ({e})")))
}

/// Kills `child`'s process group (it leads one) and reaps it.
fn kill_group(child: &mut std::process::Child) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Spawns, retrying a few times while the file is busy: a file just written can still be open
/// for writing in a process another thread is starting.
fn spawn_retrying(
    mut spawn: impl FnMut() -> std::io::Result<std::process::Child>,
) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Checks a manifest and returns its workflows: each name with its manifest entry.
pub fn manifest_workflows(manifest: &Value) -> Result<Vec<(String, Value)>, RegisterError> {
    let bad = |m: String| RegisterError::InvalidManifest(m);
    let Some(object) = manifest.as_object() else { return Err(bad("it is not a JSON object".into())) };
    if !object.get("salt_version").is_some_and(Value::is_string) {
        return Err(bad("it has no `salt_version`".into()));
    }
    let Some(workflows) = object.get("workflows").and_then(Value::as_array) else {
        return Err(bad("it has no `workflows` list".into()));
    };
    if workflows.is_empty() {
        return Err(bad("the binary has no workflow".into()));
    }
    let mut out: Vec<(String, Value)> = Vec::new();
    for (i, w) in workflows.iter().enumerate() {
        let name = w.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(bad(format!("workflow {i} has no valid `name`")));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("workflow `{name}` is listed twice")));
        }
        let Some(schema) = w.get("input_schema") else {
            return Err(bad(format!("workflow `{name}` has no `input_schema`")));
        };
        if let Err(e) = jsonschema::validator_for(schema) {
            return Err(bad(format!("the input schema of workflow `{name}` is not a valid JSON Schema: {e}")));
        }
        out.push((name.to_string(), w.clone()));
    }
    Ok(out)
}

/// A binary written to the registry's directory and checked, not yet recorded.
#[derive(Debug)]
pub struct Staged {
    /// Its sha256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: i64,
    /// Where it is stored now.
    pub path: PathBuf,
    /// Its whole manifest.
    pub manifest: Value,
    /// Its workflows, each with its manifest entry.
    pub workflows: Vec<(String, Value)>,
}

/// Checks the binary `bytes` (it must print a valid manifest) and stores it at [`binary_path`]
/// under `data`; nothing is stored when it is not a salt binary. Needs no database: the slow
/// part of registering (running the binary) holds no lock.
pub fn stage(data: &Path, bytes: &[u8]) -> Result<Staged, RegisterError> {
    let sha = sha256_hex(bytes);
    let dir = data.join("binaries");
    std::fs::create_dir_all(&dir).map_err(|e| RegisterError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let incoming = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(&dir)
        .map_err(|e| RegisterError::Io(format!("cannot write in {}: {e}", dir.display())))?;
    let staged = incoming.path().join("bin");
    write_executable(&staged, bytes)?;
    let manifest = read_manifest(&staged, MANIFEST_TIMEOUT)?;
    let workflows = manifest_workflows(&manifest)?;
    let path = binary_path(data, &sha);
    if !path.exists() {
        std::fs::rename(&staged, &path)
            .map_err(|e| RegisterError::Io(format!("cannot store {}: {e}", path.display())))?;
    }
    Ok(Staged { sha256: sha, size: bytes.len() as i64, path, manifest, workflows })
}

/// Records a staged binary and a new version of each of its workflows whose latest version is
/// not this binary with the same manifest, in one transaction.
///
/// `config`, the `salt.toml` given with the binary, overrides each workflow's schedule, time
/// zone, paused state, queue and default input and sets its policies, events and webhooks; it
/// is checked against the binary first (every workflow it names exists, every default input
/// matches its schema), and nothing is recorded when it does not fit.
pub fn record(conn: &Conn, staged: &Staged, config: Option<&SaltToml>) -> Result<Registered, RegisterError> {
    let sha = &staged.sha256;
    let empty = SaltToml::default();
    let config = config.unwrap_or(&empty);
    config
        .check_workflows(staged.workflows.iter().map(|(name, _)| name.as_str()))
        .map_err(|e| RegisterError::Config(e.to_string()))?;
    let mut settings = Vec::new();
    for (name, entry) in &staged.workflows {
        let s = WorkflowSettings::resolve(
            entry.get("schedule").and_then(Value::as_str),
            entry.get("default_input").unwrap_or(&Value::Null),
            config.workflows.get(name),
        );
        let schema = entry.get("input_schema").cloned().unwrap_or(Value::Bool(true));
        crate::schedule::check_settings(&schema, &s).map_err(|e| RegisterError::Config(format!("`{name}`: {e}")))?;
        settings.push((schema, s));
    }
    // Immediate: the versions read here are those the new ones are numbered after, also when
    // another process registers at the same time.
    // With PostgreSQL, servers on other hosts read the binary from the database.
    let contents = if conn.is_postgres() {
        let bytes = std::fs::read(&staged.path)
            .map_err(|e| RegisterError::Io(format!("cannot read {}: {e}", staged.path.display())))?;
        Some(bytes)
    } else {
        None
    };
    // In one transaction (immediate on SQLite): the versions read here are those the new ones
    // are numbered after, also when another process registers at the same time.
    let (new_binary, registered) = conn.transaction(|tx| -> Result<_, RegisterError> {
        if conn.is_postgres() {
            // Registrations of one database take turns: versions are numbered one after the other.
            tx.execute_batch("LOCK TABLE salt_server_workflow_versions IN EXCLUSIVE MODE")?;
        }
        let new_binary = db::insert_binary(
            tx,
            &db::Binary {
                sha256: sha.clone(),
                size: staged.size,
                path: staged.path.display().to_string(),
                registered_at: now_ms(),
            },
            &staged.manifest,
        )?;
        if let Some(bytes) = &contents {
            db::insert_binary_contents(tx, sha, bytes)?;
        }
        let mut registered = Vec::new();
        let now = jiff::Timestamp::now();
        for ((name, entry), (schema, settings)) in staged.workflows.iter().zip(&settings) {
            let (version, new_version) = match db::latest_version(tx, name)? {
                Some(v) if &v.binary == sha && &v.manifest == entry => (v.version, false),
                _ => (db::add_version(tx, name, sha, entry)?, true),
            };
            let target = crate::engine::WorkflowRef { workflow: name.clone(), version, binary: sha.clone() };
            crate::schedule::register_workflow(tx, &target, schema, settings, now).map_err(|e| match e {
                crate::schedule::ScheduleError::Db(e) => RegisterError::Db(e),
                other => RegisterError::Config(format!("`{name}`: {other}")),
            })?;
            registered.push(RegisteredWorkflow { workflow: name.clone(), version, new_version });
        }
        Ok((new_binary, registered))
    })?;
    Ok(Registered { sha256: sha.clone(), size: staged.size, new_binary, workflows: registered })
}

/// Registers the binary `bytes` in the registry under `data`, recording it in `conn`
/// ([`stage`], then [`record`]): the binary is stored once, and each workflow gets a new
/// version unless its latest version is this binary with the same manifest. A file that is
/// not a salt binary, or whose manifest is invalid, stores nothing.
pub fn register_bytes(
    conn: &Conn,
    data: &Path,
    bytes: &[u8],
    config: Option<&SaltToml>,
) -> Result<Registered, RegisterError> {
    record(conn, &stage(data, bytes)?, config)
}

/// [`register_bytes`] of the file at `path`.
pub fn register_file(
    conn: &Conn,
    data: &Path,
    path: &Path,
    config: Option<&SaltToml>,
) -> Result<Registered, RegisterError> {
    let bytes = std::fs::read(path).map_err(|e| RegisterError::Io(format!("cannot read {}: {e}", path.display())))?;
    register_bytes(conn, data, &bytes, config)
}

fn write_executable(path: &Path, bytes: &[u8]) -> Result<(), RegisterError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| RegisterError::Io(format!("cannot write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o755).open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// A registered workflow: its latest version, and the numbers of all its versions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowSummary {
    /// Its name.
    pub name: String,
    /// Its latest version.
    pub latest: i64,
    /// All its versions, newest first.
    pub versions: Vec<i64>,
    /// The binary of the latest version.
    pub binary: String,
    /// Its doc comment.
    pub doc: String,
    /// Its cron schedule: the binary's, unless the salt.toml given at registration set
    /// another (or none).
    pub schedule: Option<String>,
    /// The time zone of its schedule.
    pub timezone: Option<String>,
    /// Whether its schedule and event triggers are paused.
    pub paused: bool,
    /// When the latest version was registered (ms since the epoch).
    pub registered_at: i64,
}

/// Every registered workflow, by name.
pub fn workflows(conn: &Conn) -> crate::sql::Result<Vec<WorkflowSummary>> {
    let mut out = Vec::new();
    for latest in db::latest_versions(conn)? {
        let versions = db::versions(conn, &latest.workflow)?.into_iter().map(|v| v.version).collect();
        let scheduled = crate::schedule::get(conn, &latest.workflow)?;
        out.push(WorkflowSummary {
            doc: latest.manifest.get("doc").and_then(Value::as_str).unwrap_or_default().to_string(),
            schedule: match &scheduled {
                Some(s) => s.cron.clone(),
                None => latest.manifest.get("schedule").and_then(Value::as_str).map(str::to_string),
            },
            timezone: scheduled.as_ref().filter(|s| s.cron.is_some()).map(|s| s.timezone.clone()),
            paused: scheduled.is_some_and(|s| s.paused),
            name: latest.workflow,
            latest: latest.version,
            versions,
            binary: latest.binary,
            registered_at: latest.registered_at,
        });
    }
    Ok(out)
}

/// The input schema of a workflow version (its manifest's `input_schema`).
pub fn input_schema(version: &db::WorkflowVersion) -> &Value {
    version.manifest.get("input_schema").unwrap_or(&Value::Bool(true))
}

/// The default input of a workflow version, if it has one.
pub fn default_input(version: &db::WorkflowVersion) -> Option<&Value> {
    version.manifest.get("default_input").filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script that prints `manifest` when run as `manifest --json`.
    pub(crate) fn fake_binary(dir: &Path, name: &str, manifest: &str) -> PathBuf {
        let path = dir.join(name);
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = manifest ] && [ \"$2\" = --json ]; then cat <<'EOF'\n{manifest}\nEOF\nelse exit 2; fi\n"
        );
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn manifest(doc: &str) -> String {
        serde_json::json!({
            "binary": "etl", "salt_version": "0.1.0", "tasks": [],
            "workflows": [
                {"name": "etl", "doc": doc, "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}, "default_input": {"n": 1}},
                {"name": "report", "doc": "", "input_schema": {"type": "object"}, "default_input": null}
            ]
        })
        .to_string()
    }

    fn fresh() -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        salt_runtime::ops::open(&path.display().to_string()).unwrap();
        (dir, db::open(&path.display().to_string()).unwrap())
    }

    #[test]
    fn a_binary_is_stored_once_and_versions_change_only_with_it() {
        let (dir, conn) = fresh();
        let data = dir.path().join("data");
        let one = fake_binary(dir.path(), "one", &manifest("v1"));
        let first = register_file(&conn, &data, &one, None).unwrap();
        let sha = sha256_hex(&std::fs::read(&one).unwrap());
        assert_eq!(first.sha256, sha);
        assert!(first.new_binary);
        let versions: Vec<_> =
            first.workflows.iter().map(|w| (w.workflow.as_str(), w.version, w.new_version)).collect();
        assert_eq!(versions, [("etl", 1, true), ("report", 1, true)]);
        assert_eq!(std::fs::read(binary_path(&data, &sha)).unwrap(), std::fs::read(&one).unwrap());

        let again = register_file(&conn, &data, &one, None).unwrap();
        assert!(!again.new_binary);
        let versions: Vec<_> =
            again.workflows.iter().map(|w| (w.workflow.as_str(), w.version, w.new_version)).collect();
        assert_eq!(versions, [("etl", 1, false), ("report", 1, false)]);

        let two = fake_binary(dir.path(), "two", &manifest("v2"));
        let second = register_file(&conn, &data, &two, None).unwrap();
        let versions: Vec<_> =
            second.workflows.iter().map(|w| (w.workflow.as_str(), w.version, w.new_version)).collect();
        assert_eq!(versions, [("etl", 2, true), ("report", 2, true)]);
        let listed = workflows(&conn).unwrap();
        assert_eq!(
            listed.iter().map(|w| (w.name.as_str(), w.versions.clone())).collect::<Vec<_>>(),
            [("etl", vec![2, 1]), ("report", vec![2, 1])]
        );
        assert_eq!(db::version(&conn, "etl", 1).unwrap().unwrap().manifest["doc"], "v1");
        // Only the two binaries are left in the registry: nothing staged stays behind.
        assert_eq!(std::fs::read_dir(data.join("binaries")).unwrap().count(), 2);
    }

    #[test]
    fn a_file_that_is_not_a_salt_binary_stores_nothing() {
        let (dir, conn) = fresh();
        let data = dir.path().join("data");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let cases = [
            (text, "not a salt workflow binary: cannot run"),
            (
                fake_binary(dir.path(), "garbage", "hello"),
                "not a salt workflow binary: `manifest --json` did not print",
            ),
            (fake_binary(dir.path(), "array", "[1, 2]"), "invalid manifest: it is not a JSON object"),
            (
                fake_binary(
                    dir.path(),
                    "schema",
                    r#"{"salt_version": "0.1.0", "workflows": [{"name": "w", "input_schema": {"type": 12}}]}"#,
                ),
                "invalid manifest: the input schema of workflow `w` is not a valid JSON Schema",
            ),
            (
                fake_binary(dir.path(), "empty", r#"{"salt_version": "0.1.0", "workflows": []}"#),
                "invalid manifest: the binary has no workflow",
            ),
        ];
        for (path, says) in cases {
            let err = register_file(&conn, &data, &path, None).unwrap_err().to_string();
            assert!(err.starts_with(says), "{}: {err}", path.display());
        }
        assert!(workflows(&conn).unwrap().is_empty());
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM salt_server_binaries", (), |r| r.get(0)).unwrap();
        assert_eq!(count, 0);
        assert_eq!(std::fs::read_dir(data.join("binaries")).unwrap().count(), 0);
    }

    #[test]
    fn only_an_elf_executable_of_this_machine_with_the_marker_passes_the_static_check() {
        let script = b"#!/bin/sh\ntouch ran\n".to_vec();
        let err = check_binary(&script).unwrap_err().to_string();
        assert!(err.contains("not an ELF executable"), "{err}");
        let sh = std::fs::read("/bin/sh").unwrap();
        let err = check_binary(&sh).unwrap_err().to_string();
        assert!(err.contains("not one built with salt"), "{err}");
        let mut marked = sh.clone();
        marked.extend_from_slice(salt_runtime::ops::MANIFEST_MARKER.as_bytes());
        check_binary(&marked).unwrap();
        // Another architecture (the machine field), another word size.
        let mut other = marked.clone();
        other[18] ^= 0x40;
        let err = check_binary(&other).unwrap_err().to_string();
        assert!(err.contains("another architecture"), "{err}");
        let mut other = marked;
        other[4] = 3 - other[4];
        let err = check_binary(&other).unwrap_err().to_string();
        assert!(err.contains("another word size"), "{err}");
    }

    #[test]
    fn a_manifest_is_read_with_no_inherited_secrets_and_a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        // Cargo sets CARGO_MANIFEST_DIR for the test process: the binary must not see it.
        std::fs::write(
            &path,
            "#!/bin/sh\nprintf '{\"leaked\": \"%s\", \"path\": \"%s\"}' \"$CARGO_MANIFEST_DIR\" \"$PATH\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let seen = read_manifest(&path, Duration::from_secs(10)).unwrap();
        assert_eq!(seen["leaked"], "", "{seen}");
        assert_ne!(seen["path"], "", "{seen}");

        // What it started in the background dies with it.
        let pid_file = dir.path().join("pid");
        let path = dir.path().join("forks");
        std::fs::write(&path, format!("#!/bin/sh\nsleep 30 &\necho $! > {}\nexec sleep 30\n", pid_file.display()))
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = read_manifest(&path, Duration::from_millis(500)).unwrap_err().to_string();
        assert!(err.contains("did not finish"), "{err}");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Gone, or a zombie waiting to be reaped.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) {
                break;
            }
            assert!(Instant::now() < deadline, "the background child {pid} still runs: {stat}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_binary_that_hangs_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hang");
        std::fs::write(&path, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let err = read_manifest(&path, Duration::from_millis(300)).unwrap_err().to_string();
        assert!(err.contains("did not finish within 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
