//! The Slurm side of `salt worker --slurm`: each attempt is a Slurm batch job.
//!
//! The worker writes a job script into a directory the compute nodes share with it, submits
//! it with `sbatch` (the attempt's cores, memory, timeout and priority become `--cpus-per-task`,
//! `--mem`, `--time` and `--nice`) and waits for the job to call back: the script opens two TCP
//! connections to the worker (bash's `/dev/tcp`), names the attempt by a one-time token, and
//! runs `<bin> __salt exec` with its stdin and stdout on the first connection (the protocol) and
//! its stderr on the second (the attempt's log). From then on the worker relays the attempt as
//! it relays a local process. What the job itself prints outside the binary (the script's
//! errors, `slurmstepd`'s notices) lands in the job's output file, which the worker adds to the
//! log when the job ends.
//!
//! A job that ends before its attempt did is read with `scontrol show job` (`sacct` when
//! `scontrol` no longer knows it): killed at its time limit, killed over its memory, cancelled
//! from outside, lost with its node; the attempt fails with that reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use salt_runtime::remote::Resources;
use salt_runtime::{Error, ErrorKind};

/// How long a connection has to name its attempt.
const NAME_WITHIN: Duration = Duration::from_secs(10);

/// How a worker runs its attempts as Slurm jobs.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Where job scripts and job output files are written: a directory the compute nodes see
    /// at the same path.
    pub dir: PathBuf,
    /// Where the worker listens for its jobs' connections.
    pub listen: SocketAddr,
    /// The host name (or address) jobs connect to; this host's name when not given.
    pub address: Option<String>,
    /// More `sbatch` options, given after salt's own (so they win): `--partition=…`, `--account=…`.
    pub sbatch_args: Vec<String>,
}

/// A job's two connections back to the worker.
pub(crate) struct Callback {
    /// The protocol: the node's stdout…
    pub(crate) proto_in: BufReader<OwnedReadHalf>,
    /// …and its stdin.
    pub(crate) proto_out: OwnedWriteHalf,
    /// The node's stderr.
    pub(crate) log: BufReader<OwnedReadHalf>,
}

#[derive(Default)]
struct Expected {
    proto: Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)>,
    log: Option<BufReader<OwnedReadHalf>>,
    done: Option<oneshot::Sender<Callback>>,
}

/// The worker's end of its jobs: the listener they call back to, and the commands that submit,
/// read and cancel them.
pub(crate) struct Slurm {
    options: SlurmOptions,
    /// The address jobs connect to (`host:port`, as bash's `/dev/tcp/host/port` takes it).
    host: String,
    port: u16,
    expected: Arc<Mutex<HashMap<String, Expected>>>,
}

impl Slurm {
    /// Listens for jobs' connections.
    pub(crate) async fn start(options: SlurmOptions) -> anyhow::Result<Arc<Self>> {
        let dir = std::path::absolute(&options.dir)?;
        std::fs::create_dir_all(&dir)?;
        let listener = TcpListener::bind(options.listen).await?;
        let port = listener.local_addr()?.port();
        let host = match &options.address {
            Some(a) => a.clone(),
            None => {
                nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
            }
        };
        let slurm = Arc::new(Self { options: SlurmOptions { dir, ..options }, host, port, expected: Arc::default() });
        let expected = slurm.expected.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let expected = expected.clone();
                tokio::spawn(async move { accept(stream, expected).await });
            }
        });
        Ok(slurm)
    }

    /// Where jobs call back, as `host:port`.
    pub(crate) fn callback_address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A new token and what its job's connections arrive on.
    pub(crate) fn expect(&self) -> (String, oneshot::Receiver<Callback>) {
        let token = token();
        let (tx, rx) = oneshot::channel();
        let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        expected.insert(token.clone(), Expected { done: Some(tx), ..Expected::default() });
        (token, rx)
    }

    /// Forgets a token: later connections naming it are closed.
    pub(crate) fn forget(&self, token: &str) {
        self.expected.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }

    /// The directory of one job.
    pub(crate) fn job_dir(&self, token: &str) -> PathBuf {
        self.options.dir.join(format!("job-{token}"))
    }

    /// Writes the job script of an attempt and submits it; the job's id, or why `sbatch`
    /// refused it.
    pub(crate) async fn submit(
        &self,
        token: &str,
        binary: &Path,
        name: &str,
        resources: &Resources,
    ) -> Result<(u64, Vec<String>), String> {
        let dir = self.job_dir(token);
        let script = dir.join("job.sh");
        let out = dir.join("slurm.out");
        let text = job_script(&self.host, self.port, token, binary);
        let written = (|| -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::create_dir_all(&dir)?;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o700).open(&script)?;
            std::io::Write::write_all(&mut f, text.as_bytes())
        })();
        written.map_err(|e| format!("cannot write the job script {}: {e}", script.display()))?;
        let mut args =
            vec!["--parsable".to_string(), format!("--job-name={name}"), format!("--output={}", out.display())];
        let options = sbatch_options(resources, &self.options.sbatch_args);
        args.extend(options.iter().cloned());
        args.push(script.display().to_string());
        let output = tokio::process::Command::new("sbatch")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run `sbatch`: {e}"))?;
        if !output.status.success() {
            let err = String::from_utf8_lossy(&output.stderr);
            return Err(format!("`sbatch` refused the job ({}): {}", output.status, err.trim()));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = stdout.trim().split(';').next().and_then(|id| id.parse::<u64>().ok());
        id.map(|id| (id, options)).ok_or_else(|| format!("`sbatch` printed no job id: {}", stdout.trim()))
    }
}

/// Reads the first line of a job's connection, the token and which connection it is, and hands
/// the connection to its attempt.
async fn accept(stream: tokio::net::TcpStream, expected: Arc<Mutex<HashMap<String, Expected>>>) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut first = String::new();
    match tokio::time::timeout(NAME_WITHIN, read.read_line(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let mut words = first.split_whitespace();
    let (Some("salt-slurm"), Some(token), Some(which)) = (words.next(), words.next(), words.next()) else {
        tracing::warn!("a connection to the Slurm listener did not name an attempt");
        return;
    };
    let mut expected = expected.lock().unwrap_or_else(|p| p.into_inner());
    let Some(e) = expected.get_mut(token) else {
        tracing::warn!("a Slurm job called back with a token no attempt has");
        return;
    };
    match which {
        "proto" if e.proto.is_none() => e.proto = Some((read, write)),
        "log" if e.log.is_none() => e.log = Some(read),
        _ => return,
    }
    if e.proto.is_some() && e.log.is_some() {
        let mut e = expected.remove(token).expect("present");
        let ((proto_in, proto_out), log) = (e.proto.take().expect("proto"), e.log.take().expect("log"));
        if let Some(done) = e.done.take() {
            let _ = done.send(Callback { proto_in, proto_out, log });
        }
    }
}

/// A one-time token: 128 random bits, hex.
fn token() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // No /dev/urandom: the time and the process id still tell jobs apart.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        bytes.copy_from_slice(&digest[..16]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` quoted for bash.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The job script of one attempt.
fn job_script(host: &str, port: u16, token: &str, binary: &Path) -> String {
    let tcp = quote(&format!("/dev/tcp/{host}/{port}"));
    let bin = quote(&binary.display().to_string());
    format!(
        "#!/bin/bash\n\
         # A salt attempt: the protocol on one connection back to the worker, the log on another.\n\
         exec 3<>{tcp} || exit 90\n\
         echo 'salt-slurm {token} proto' >&3\n\
         exec 4<>{tcp} || exit 90\n\
         echo 'salt-slurm {token} log' >&4\n\
         exec {bin} __salt exec <&3 >&3 2>&4 3>&- 4>&-\n"
    )
}

/// The `sbatch` options of an attempt: its resources, then the worker's own options.
pub(crate) fn sbatch_options(resources: &Resources, extra: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(cores) = resources.cores {
        args.push(format!("--cpus-per-task={cores}"));
    }
    if let Some(mb) = resources.memory_mb {
        args.push(format!("--mem={mb}M"));
    }
    if let Some(ms) = resources.timeout_ms {
        // Slurm counts time limits in whole minutes; salt's own timer stops the attempt at its
        // exact timeout, the job's limit is the backstop.
        args.push(format!("--time={}", ms.div_ceil(60_000).max(1)));
    }
    if resources.priority < 0 {
        // Only privileged users may raise a job's priority (a negative nice); a lower priority
        // is open to everyone.
        args.push(format!("--nice={}", -i64::from(resources.priority)));
    }
    args.extend(extra.iter().cloned());
    args
}

/// What Slurm says of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobInfo {
    /// `JobState` (`RUNNING`, `TIMEOUT`, …).
    pub(crate) state: String,
    /// `Reason`.
    pub(crate) reason: String,
    /// `ExitCode` (`code:signal`).
    pub(crate) exit_code: String,
    /// `TimeLimit`.
    pub(crate) time_limit: String,
}

impl JobInfo {
    /// Whether the job has ended.
    pub(crate) fn ended(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "CONFIGURING"
                | "RUNNING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
        )
    }
}

/// Reads the `Key=Value` words of `scontrol show job -o`.
pub(crate) fn parse_scontrol(text: &str) -> Option<JobInfo> {
    let mut fields = HashMap::new();
    for word in text.split_whitespace() {
        if let Some((k, v)) = word.split_once('=') {
            fields.entry(k).or_insert(v);
        }
    }
    let get = |k: &str| fields.get(k).map(|v| v.to_string()).unwrap_or_default();
    let state = get("JobState");
    if state.is_empty() {
        return None;
    }
    Some(JobInfo { state, reason: get("Reason"), exit_code: get("ExitCode"), time_limit: get("TimeLimit") })
}

/// What Slurm says of job `id`: `scontrol show job`, or `sacct` once `scontrol` has forgotten
/// it; `None` when neither knows it.
pub(crate) async fn job_info(id: u64) -> Option<JobInfo> {
    let out = tokio::process::Command::new("scontrol")
        .args(["show", "job", "-o", &id.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok();
    if let Some(info) =
        out.filter(|o| o.status.success()).and_then(|o| parse_scontrol(&String::from_utf8_lossy(&o.stdout)))
    {
        return Some(info);
    }
    let out = tokio::process::Command::new("sacct")
        .args(["-n", "-P", "-X", "-j", &id.to_string(), "-o", "State,ExitCode,Timelimit"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.lines().next()?.split('|');
    let state = parts.next()?.split_whitespace().next()?.to_string();
    let exit_code = parts.next().unwrap_or_default().to_string();
    let time_limit = parts.next().unwrap_or_default().to_string();
    Some(JobInfo { state, reason: String::new(), exit_code, time_limit })
}

/// Cancels job `id` (`scancel`), in the background.
pub(crate) fn cancel(id: u64) {
    match std::process::Command::new("scancel")
        .arg(id.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        // Reaped by a thread of its own: nothing waits on it.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => tracing::warn!("cannot run `scancel {id}`: {e}"),
    }
}

/// The error of an attempt whose job `id` ended before the attempt did, from what Slurm says
/// of the job and what the job's output file holds.
pub(crate) fn job_error(id: u64, info: Option<&JobInfo>, output: &[String]) -> Error {
    let over_memory =
        output.iter().any(|l| l.contains("exceeded memory limit") || l.contains("Exceeded job memory limit"));
    let Some(info) = info else {
        return Error::new(ErrorKind::Lost, format!("Slurm job {id} ended and Slurm no longer knows it"));
    };
    let state = info.state.as_str();
    let details = format!("JobState={} Reason={} ExitCode={}", info.state, info.reason, info.exit_code);
    match state {
        "TIMEOUT" | "DEADLINE" => Error::new(
            ErrorKind::Timeout,
            format!("Slurm job {id} was killed at its time limit ({}; {details})", info.time_limit),
        ),
        "OUT_OF_MEMORY" => Error::new(
            ErrorKind::Fatal,
            format!("Slurm job {id} was killed for using more memory than its --mem ({details})"),
        ),
        _ if over_memory => Error::new(
            ErrorKind::Fatal,
            format!("Slurm job {id} was killed for using more memory than its --mem ({details})"),
        ),
        "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" => {
            Error::new(ErrorKind::Lost, format!("Slurm job {id} was lost with its node ({details})"))
        }
        "CANCELLED" => Error::new(
            ErrorKind::Task,
            format!("Slurm job {id} was cancelled outside salt (scancel or an administrator; {details})"),
        ),
        _ => Error::new(ErrorKind::Protocol, format!("Slurm job {id} ended before its attempt did ({details})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_sbatch_options_and_the_workers_come_last() {
        let r = Resources { cores: Some(4), memory_mb: Some(2048), timeout_ms: Some(90_000), priority: -3 };
        assert_eq!(
            sbatch_options(&r, &["--partition=batch".into()]),
            ["--cpus-per-task=4", "--mem=2048M", "--time=2", "--nice=3", "--partition=batch"]
        );
        // A short timeout is one minute; a higher priority is not asked of Slurm.
        let r = Resources { timeout_ms: Some(1), priority: 5, ..Resources::default() };
        assert_eq!(sbatch_options(&r, &[]), ["--time=1"]);
        assert!(sbatch_options(&Resources::default(), &[]).is_empty());
    }

    #[test]
    fn the_job_script_calls_back_and_quotes_the_binary() {
        let s = job_script("node-1", 4242, "abc", Path::new("/shared/cache/it's"));
        assert!(s.contains("exec 3<>'/dev/tcp/node-1/4242' || exit 90\n"), "{s}");
        assert!(s.contains("echo 'salt-slurm abc proto' >&3\n"), "{s}");
        assert!(s.ends_with("exec '/shared/cache/it'\\''s' __salt exec <&3 >&3 2>&4 3>&- 4>&-\n"), "{s}");
    }

    #[test]
    fn scontrol_output_is_read_and_the_end_is_named() {
        let text = "JobId=7 JobName=x UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) \
                    ExitCode=0:15 RunTime=00:01:12 TimeLimit=00:01:00 TimeMin=N/A";
        let info = parse_scontrol(text).unwrap();
        assert_eq!(
            info,
            JobInfo {
                state: "TIMEOUT".into(),
                reason: "TimeLimit".into(),
                exit_code: "0:15".into(),
                time_limit: "00:01:00".into()
            }
        );
        assert!(info.ended());
        let e = job_error(7, Some(&info), &[]);
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(
            e.message(),
            "Slurm job 7 was killed at its time limit (00:01:00; JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15)"
        );
        let running = parse_scontrol("JobId=7 JobState=RUNNING Reason=None").unwrap();
        assert!(!running.ended());
        assert_eq!(parse_scontrol("slurm_load_jobs error: Invalid job id specified"), None);

        let failed = parse_scontrol("JobId=3 JobState=FAILED Reason=JobLaunchFailure ExitCode=0:9").unwrap();
        let out = ["slurmstepd-vm: error: Exceeded job memory limit".to_string()];
        let e = job_error(3, Some(&failed), &out);
        assert_eq!((e.kind(), e.message().contains("more memory than its --mem")), (ErrorKind::Fatal, true));
        let cancelled = parse_scontrol("JobId=4 JobState=CANCELLED Reason=None ExitCode=0:15").unwrap();
        assert!(job_error(4, Some(&cancelled), &[]).message().starts_with("Slurm job 4 was cancelled outside salt"));
        assert_eq!(job_error(5, None, &[]).kind(), ErrorKind::Lost);
    }
}
