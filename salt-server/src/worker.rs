//! `salt worker`: connects to a server, takes attempts of the queues it serves, and runs each
//! in a process of the attempt's binary, fetched once into a local cache and checked against
//! its sha256.
//!
//! The worker relays: what the server sends for an attempt goes to the node process running it
//! (over the stdio protocol every salt binary speaks), what the process says goes back to the
//! server, its stderr as the attempt's log lines. A process runs one attempt at a time and is
//! kept for the next attempt of its binary. When the connection to the server ends, the worker
//! kills its processes (the server runs their attempts again) and connects again. Ctrl-C (or
//! SIGTERM) drains: no new attempts, the running ones finish, then the worker exits; a second
//! one exits at once.
//!
//! With `--slurm`, each attempt runs as a Slurm batch job instead of a local process (see
//! [`crate::slurm`]): the job calls back to the worker, which relays it the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use salt_runtime::protocol::{END_MARKER, FromNode, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ToNode};
use salt_runtime::remote::{self, FromWorker, Resources, ToWorker};
use salt_runtime::{Error, ErrorKind};

use crate::slurm::{self, Slurm, SlurmOptions};

/// How long a cancelled attempt has to stop before its process is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long an ended attempt's last log lines may take to arrive.
const LOG_GRACE: Duration = Duration::from_secs(2);
/// How often a worker asks Slurm about a job that has not called back yet.
const JOB_POLL: Duration = Duration::from_secs(2);
/// How many times in a row Slurm may not know a job that has not called back before the worker
/// gives it up.
const JOB_UNKNOWN_POLLS: u32 = 5;
/// How long a job that hung up has to reach its final state in Slurm.
const JOB_END_WITHIN: Duration = Duration::from_secs(30);
/// The first wait before connecting again, doubled after each failed try up to
/// [`RECONNECT_MAX`], each wait ±20 % at random so that workers do not come back in step.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
/// The longest wait before connecting again.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long the server has to accept or refuse a worker's hello.
const ACCEPT_WITHIN: Duration = Duration::from_secs(30);

/// `salt worker`: takes attempts of its queues from a server and runs them.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// A queue to serve (repeat for several).
    #[arg(long = "queue", default_value = "default")]
    pub queues: Vec<String>,
    /// How many attempts run at once.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// The CPU cores its attempts may ask for together (`#[task(cores = N)]`); the server
    /// gives it no attempt that would go over [default: this machine's cores; with `--slurm`,
    /// not counted].
    #[arg(long, env = "SALT_CORES", value_parser = clap::value_parser!(u32).range(1..))]
    pub cores: Option<u32>,
    /// The memory, in MiB, its attempts may ask for together (`#[task(memory_mb = M)]`)
    /// [default: this machine's memory; with `--slurm`, not counted].
    #[arg(long, env = "SALT_MEMORY_MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_mb: Option<u64>,
    /// Its name, as the server lists it (default `host:pid`).
    #[arg(long)]
    pub name: Option<String>,
    /// Where fetched binaries are cached (default `.salt/worker-cache`). With `--slurm`, a
    /// directory the compute nodes see at the same path.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Runs each attempt as a Slurm batch job (`sbatch`) instead of a local process.
    #[arg(long)]
    pub slurm: bool,
    /// With `--slurm`: where job scripts and job output files go, a directory the compute
    /// nodes see at the same path (default `.salt/slurm`).
    #[arg(long, requires = "slurm")]
    pub slurm_dir: Option<PathBuf>,
    /// With `--slurm`: the address jobs connect back to the worker on.
    #[arg(long, requires = "slurm", default_value = "0.0.0.0:0")]
    pub slurm_listen: std::net::SocketAddr,
    /// With `--slurm`: the host name or address jobs connect to (default: this host's name).
    #[arg(long, requires = "slurm")]
    pub slurm_address: Option<String>,
    /// With `--slurm`: one more `sbatch` option, given after salt's own (repeat for several):
    /// `--sbatch-arg=--partition=batch`.
    #[arg(long = "sbatch-arg", requires = "slurm", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
}

impl WorkerArgs {
    /// The options these arguments give, for the server at `server` (with `token`, a token
    /// of the `worker` role, when the server has tokens).
    pub fn options(self, server: String, token: Option<String>) -> WorkerOptions {
        let host =
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into());
        WorkerOptions {
            name: self.name.unwrap_or_else(|| format!("{host}:{}", std::process::id())),
            server,
            token,
            queues: self.queues,
            slots: self.slots.max(1),
            cores: self.cores.or_else(|| (!self.slurm).then(|| salt_runtime::runner::machine_capacity().0)),
            memory_mb: self
                .memory_mb
                .or_else(|| if self.slurm { None } else { salt_runtime::runner::machine_capacity().1 }),
            cache: self.cache.unwrap_or_else(|| PathBuf::from(".salt/worker-cache")),
            slurm: self.slurm.then(|| SlurmOptions {
                dir: self.slurm_dir.unwrap_or_else(|| PathBuf::from(".salt/slurm")),
                listen: self.slurm_listen,
                address: self.slurm_address,
                sbatch_args: self.sbatch_args,
            }),
        }
    }
}

/// What a worker serves and where.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The server's URL (`http://127.0.0.1:7878`), or several separated by commas (servers on
    /// one PostgreSQL database): the worker connects to each, giving each all its slots.
    pub server: String,
    /// The token it presents, if the server has tokens.
    pub token: Option<String>,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// How many attempts it runs at once.
    pub slots: usize,
    /// The cores its attempts may ask for together; not counted when `None`.
    pub cores: Option<u32>,
    /// The memory (MiB) its attempts may ask for together; not counted when `None`.
    pub memory_mb: Option<u64>,
    /// Its name, as the server lists it.
    pub name: String,
    /// Where fetched binaries are kept, by sha256.
    pub cache: PathBuf,
    /// Runs attempts as Slurm jobs, when set.
    pub slurm: Option<SlurmOptions>,
}

/// Runs a worker until it is stopped (Ctrl-C or SIGTERM drain it) or the server refuses it.
pub async fn run(mut options: WorkerOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.cache)?;
    // Jobs run the cached binary by its path, wherever they start.
    options.cache = std::path::absolute(&options.cache)?;
    let slurm = match options.slurm.clone() {
        Some(o) => {
            let slurm = Slurm::start(o).await?;
            tracing::info!(
                worker = %options.name,
                callback = %slurm.callback_address(),
                "worker `{}` runs attempts as Slurm jobs (they call back to {})",
                options.name,
                slurm.callback_address()
            );
            Some(slurm)
        }
        None => None,
    };
    let draining = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        let mut n = 0;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            n += 1;
            let _ = stop_tx.send(n);
        }
    });
    let servers = servers(&options.server);
    if servers.len() > 1 {
        // One connection per server, each with every slot: a server gives attempts only to the
        // workers connected to it, and any server may drive any run.
        let mut connections = tokio::task::JoinSet::new();
        for server in servers {
            let options = WorkerOptions { server, ..options.clone() };
            // Each connection tells its own server when the worker drains.
            connections.spawn(serve_one(options, slurm.clone(), stop_rx.clone(), Arc::new(AtomicBool::new(false))));
        }
        let mut outcome = Ok(());
        while let Some(ended) = connections.join_next().await {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // A server that refuses this worker stops it: its token or queues are wrong.
                    connections.abort_all();
                    outcome = Err(e);
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => outcome = Err(anyhow::anyhow!("a connection stopped: {e}")),
            }
        }
        return outcome;
    }
    serve_one(options, slurm, stop_rx, draining).await
}

/// The servers `--server` names: one URL, or several separated by commas.
pub fn servers(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Serves one server until it is stopped or the server refuses it, reconnecting when the
/// connection is lost.
async fn serve_one(
    options: WorkerOptions,
    slurm: Option<Arc<Slurm>>,
    stop_rx: tokio::sync::watch::Receiver<u32>,
    draining: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut backoff = RECONNECT_FIRST;
    let mut stop = stop_rx.clone();
    loop {
        if *stop_rx.borrow() > 0 {
            return Ok(());
        }
        match session(&options, slurm.clone(), stop_rx.clone(), draining.clone()).await {
            Ok(Ended::Drained) => {
                tracing::info!(worker = %options.name, "worker `{}` drained and stopped", options.name);
                return Ok(());
            }
            Ok(Ended::Refused(why)) => anyhow::bail!("the server at {} refused this worker: {why}", options.server),
            Ok(Ended::Lost(why)) => {
                tracing::warn!(
                    worker = %options.name,
                    server = %options.server,
                    reason = %why,
                    "worker `{}`: connection to {} lost ({why}); reconnecting",
                    options.name,
                    options.server
                );
                // It had been accepted: the next try starts from the shortest wait again.
                backoff = RECONNECT_FIRST;
            }
            Ok(Ended::NotAccepted(why)) => tracing::warn!(
                worker = %options.name,
                server = %options.server,
                reason = %why,
                "worker `{}`: {} did not accept it ({why}); trying again in {:.1} s",
                options.name,
                options.server,
                backoff.as_secs_f64()
            ),
            Err(e) => tracing::warn!(
                worker = %options.name,
                server = %options.server,
                error = %e,
                "worker `{}`: cannot connect to {}: {e}; trying again in {:.1} s",
                options.name,
                options.server,
                backoff.as_secs_f64()
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(jitter(backoff)) => {}
            _ = stop.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// `wait` ±20 %, at random.
fn jitter(wait: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // A fresh random state hashes to a random number: enough to spread workers apart.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let factor = 0.8 + 0.4 * (random % 10_000) as f64 / 10_000.0;
    wait.mul_f64(factor)
}

enum Ended {
    Drained,
    /// Refused for good: its token or queues must change first.
    Refused(String),
    /// The server did not accept it this time (it may later).
    NotAccepted(String),
    /// The connection ended after it was accepted.
    Lost(String),
}

/// What the server's answer to an upgrade request refused for good says, for the worker's
/// operator: how to pass a token when it needs one.
fn refused_upgrade(status: u16, body: &str) -> String {
    let said = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    match status {
        401 => format!(
            "it needs a valid token ({status}: {said}); pass a token of the worker role with --token TOKEN or \
             SALT_TOKEN=TOKEN (create one with `salt token create NAME --role worker`)"
        ),
        403 => format!("its token may not serve workers ({status}: {said}); use a token of the worker role"),
        _ => format!("{status}: {said}"),
    }
}

/// One connection to the server, until it ends.
async fn session(
    options: &WorkerOptions,
    slurm: Option<Arc<Slurm>>,
    mut stop: tokio::sync::watch::Receiver<u32>,
    draining: Arc<AtomicBool>,
) -> anyhow::Result<Ended> {
    let url = ws_url(&options.server)?;
    let mut request = url.as_str().into_client_request()?;
    if let Some(token) = &options.token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    }
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES + 4096))
        .max_frame_size(Some(MAX_MESSAGE_BYTES + 4096));
    let (ws, _) = match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
        Ok(ws) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            if status.as_u16() == 401 || status.as_u16() == 403 {
                return Ok(Ended::Refused(refused_upgrade(status.as_u16(), &body)));
            }
            anyhow::bail!("{status}: {body}");
        }
        Err(e) => return Err(e.into()),
    };
    let (mut sink, mut stream) = ws.split();
    let hello =
        remote::hello(options.name.clone(), options.queues.clone(), options.slots, options.cores, options.memory_mb);
    sink.send(Message::Text(serde_json::to_string(&hello)?.into())).await?;
    // Connected only once the server says so: it may refuse the hello (a private queue, another
    // protocol) by closing the connection.
    let first = loop {
        let msg = match tokio::time::timeout(ACCEPT_WITHIN, stream.next()).await {
            Ok(msg) => msg,
            Err(_) => return Ok(Ended::NotAccepted(format!("no answer to its hello within {ACCEPT_WITHIN:?}"))),
        };
        match msg {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ToWorker>(&text) {
                Ok(ToWorker::Accepted { .. }) => break None,
                // A server that does not say it accepted: its first attempt says it.
                Ok(other) => break Some(other),
                Err(e) => return Ok(Ended::NotAccepted(format!("the server sent what this worker cannot read: {e}"))),
            },
            Some(Ok(Message::Close(frame))) => {
                let (code, why) =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new()));
                if code == 1008 {
                    return Ok(Ended::Refused(why));
                }
                return Ok(Ended::NotAccepted(format!("closed by the server ({code}) {why}")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Ok(Ended::NotAccepted(e.to_string())),
            None => return Ok(Ended::NotAccepted("the connection ended".into())),
        }
    };
    tracing::info!(
        worker = %options.name,
        server = %options.server,
        queues = ?options.queues,
        slots = options.slots,
        "worker `{}` connected to {} (queues {}, {} slots)",
        options.name,
        options.server,
        options.queues.join(","),
        options.slots
    );

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<FromWorker>();
    let relay = Relay { state: Arc::default(), out: out_tx.clone(), fetcher: Arc::new(Fetcher::new(options)), slurm };
    if draining.load(Ordering::SeqCst) {
        let _ = out_tx.send(FromWorker::Draining);
    }
    if let Some(first) = first {
        relay.handle(first);
    }
    let ended = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ToWorker>(&text) {
                    Ok(msg) => relay.handle(msg),
                    Err(e) => break Ended::Lost(format!("the server sent what this worker cannot read: {e}")),
                },
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    break Ended::Lost(format!("closed by the server {why}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Ended::Lost(e.to_string()),
                None => break Ended::Lost("the connection ended".into()),
            },
            out = out_rx.recv() => {
                let Some(out) = out else { continue };
                if let Err(e) = sink.send(Message::Text(serde_json::to_string(&out)?.into())).await {
                    break Ended::Lost(e.to_string());
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() > 1 {
                    relay.kill_all();
                    break Ended::Drained;
                }
                if !draining.swap(true, Ordering::SeqCst) {
                    tracing::info!(
                        worker = %options.name,
                        "worker `{}` draining: running attempts finish, no new ones start (Ctrl-C again to stop now)",
                        options.name
                    );
                    let _ = out_tx.send(FromWorker::Draining);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if draining.load(Ordering::SeqCst) => {
                if relay.running() == 0 && out_rx.is_empty() {
                    let _ = sink.send(Message::Close(None)).await;
                    break Ended::Drained;
                }
            }
        }
    };
    if !matches!(ended, Ended::Drained) {
        // The server runs these attempts again: nothing of them may go on here.
        relay.kill_all();
    }
    Ok(ended)
}

fn ws_url(server: &str) -> anyhow::Result<String> {
    let base = server.trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        anyhow::bail!("the server URL must start with http:// or https://, not `{server}`")
    };
    Ok(format!("{rest}/api/v1/workers/connect"))
}

/// One node process, local or in a Slurm job.
struct Proc {
    pid: Option<i32>,
    binary: String,
    input: mpsc::UnboundedSender<String>,
    /// The attempt it runs, if any.
    current: Mutex<Option<u64>>,
    dead: AtomicBool,
    /// The Slurm job it runs in (one attempt, then it ends), once submitted.
    job: Mutex<Option<u64>>,
    /// Whether it runs in a Slurm job.
    slurm: bool,
}

impl Proc {
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(job) = *self.job.lock().unwrap_or_else(|p| p.into_inner()) {
            slurm::cancel(job);
        }
    }

    fn current(&self) -> Option<u64> {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_current(&self, id: Option<u64>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }
}

#[derive(Default)]
struct State {
    idle: HashMap<String, Vec<Arc<Proc>>>,
    running: HashMap<u64, Arc<Proc>>,
    all: Vec<Arc<Proc>>,
}

#[derive(Clone)]
struct Relay {
    state: Arc<Mutex<State>>,
    out: mpsc::UnboundedSender<FromWorker>,
    fetcher: Arc<Fetcher>,
    slurm: Option<Arc<Slurm>>,
}

impl Relay {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> usize {
        self.lock().running.len()
    }

    fn kill_all(&self) {
        let mut state = self.lock();
        for p in state.all.drain(..) {
            p.kill();
        }
        state.idle.clear();
        state.running.clear();
    }

    fn fail(&self, attempt_id: u64, kind: ErrorKind, message: String) {
        let error = Error::new(kind, message);
        let _ = self.out.send(FromWorker::Node { msg: FromNode::Failed { attempt_id, error } });
    }

    fn handle(&self, msg: ToWorker) {
        match msg {
            ToWorker::Start { binary, msg, resources } => {
                let ToNode::Start { attempt_id, .. } = &msg else { return };
                let attempt_id = *attempt_id;
                let this = self.clone();
                tokio::spawn(async move {
                    let path = match this.fetcher.get(&binary).await {
                        Ok(path) => path,
                        Err(e) => return this.fail(attempt_id, ErrorKind::Protocol, e),
                    };
                    if let Some(slurm) = this.slurm.clone() {
                        return this.run_job(slurm, binary, path, msg, resources).await;
                    }
                    let proc = this.proc(&binary, &path);
                    proc.set_current(Some(attempt_id));
                    this.lock().running.insert(attempt_id, proc.clone());
                    let sent = serde_json::to_string(&msg).ok().is_some_and(|line| proc.input.send(line).is_ok());
                    if !sent {
                        this.lock().running.remove(&attempt_id);
                        proc.kill();
                        this.fail(
                            attempt_id,
                            ErrorKind::Protocol,
                            "the node process ended before the attempt could start".into(),
                        );
                    }
                });
            }
            ToWorker::Accepted { .. } => {}
            ToWorker::Node { msg } => {
                let Some(id) = to_node_attempt(&msg) else { return };
                let Some(proc) = self.lock().running.get(&id).cloned() else { return };
                if matches!(msg, ToNode::Cancel { .. }) && proc.slurm {
                    // A stopped attempt's job is cancelled at once, the body not asked first (it
                    // could end the job before `scancel` does): Slurm takes down all of it.
                    proc.kill();
                    return;
                }
                if let Ok(line) = serde_json::to_string(&msg) {
                    let _ = proc.input.send(line);
                }
                if matches!(msg, ToNode::Cancel { .. }) {
                    // A body that does not stop (it blocks its thread) loses its process.
                    tokio::spawn(async move {
                        tokio::time::sleep(STOP_GRACE).await;
                        if proc.current() == Some(id) {
                            proc.kill();
                        }
                    });
                }
            }
        }
    }

    /// An idle process of `binary`, or a new one.
    fn proc(&self, binary: &str, path: &Path) -> Arc<Proc> {
        {
            let mut state = self.lock();
            if let Some(list) = state.idle.get_mut(binary) {
                while let Some(p) = list.pop() {
                    if !p.dead.load(Ordering::SeqCst) {
                        return p;
                    }
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut cmd = tokio::process::Command::new(path);
        cmd.args(["__salt", "exec"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = spawn(&mut cmd);
        let pid = child.as_ref().ok().and_then(|c| c.id()).and_then(|p| i32::try_from(p).ok());
        let proc = Arc::new(Proc {
            pid,
            binary: binary.to_string(),
            input: tx,
            current: Mutex::new(None),
            dead: AtomicBool::new(false),
            job: Mutex::new(None),
            slurm: false,
        });
        self.lock().all.push(proc.clone());
        let this = self.clone();
        let p = proc.clone();
        tokio::spawn(async move { this.serve_proc(child, rx, p).await });
        proc
    }

    /// Relays one process's messages until it ends.
    async fn serve_proc(
        &self,
        child: std::io::Result<tokio::process::Child>,
        mut input: mpsc::UnboundedReceiver<String>,
        proc: Arc<Proc>,
    ) {
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                proc.dead.store(true, Ordering::SeqCst);
                tokio::task::yield_now().await;
                if let Some(id) = proc.current() {
                    self.lock().running.remove(&id);
                    self.fail(id, ErrorKind::Protocol, format!("cannot start the node process: {e}"));
                }
                return;
            }
        };
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            proc.kill();
            return;
        };
        let broken = self.relay(stdin, stdout, tokio::io::BufReader::new(stderr), &mut input, &proc).await;
        proc.kill();
        let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => "no exit status".into(),
        };
        self.lock().all.retain(|p| !Arc::ptr_eq(p, &proc));
        if let (Some(why), Some(id)) = (broken, proc.current()) {
            self.lock().running.remove(&id);
            let why = if why.is_empty() {
                format!("the node process exited ({status})")
            } else {
                format!("the node process broke the protocol: {why}")
            };
            self.fail(id, ErrorKind::Protocol, why);
        }
    }

    /// Relays one node's messages (its stdin, stdout and stderr) until it ends, or, in a Slurm
    /// job, until its attempt has: `None` when it ended as it should, what broke when not
    /// (empty: its output ended).
    async fn relay(
        &self,
        mut stdin: impl AsyncWrite + Unpin,
        stdout: impl AsyncRead + Unpin,
        stderr: impl AsyncBufRead + Unpin,
        input: &mut mpsc::UnboundedReceiver<String>,
        proc: &Arc<Proc>,
    ) -> Option<String> {
        let mut out = tokio_util::codec::FramedRead::new(
            stdout,
            tokio_util::codec::LinesCodec::new_with_max_length(MAX_MESSAGE_BYTES),
        );
        let mut err = stderr.lines();
        let mut said_hello = false;
        let mut err_open = true;
        // An attempt's end, held until its last log line is in.
        let mut held: Option<(u64, FromNode, tokio::time::Instant)> = None;
        let mut marked: u64 = 0;
        let broken = loop {
            // A job runs one attempt: when it has ended, so has the job.
            if proc.slurm && proc.current().is_none() {
                break None;
            }
            let deadline = held.as_ref().map(|(_, _, d)| *d);
            tokio::select! {
                line = input.recv() => match line {
                    Some(mut line) => {
                        line.push('\n');
                        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                            break Some("its input closed".to_string());
                        }
                    }
                    None => break None,
                },
                line = out.next() => {
                    let line = match line {
                        Some(Ok(line)) => line,
                        Some(Err(e)) => break Some(format!("its output broke: {e}")),
                        None => break Some(String::new()),
                    };
                    let msg = match serde_json::from_str::<FromNode>(&line) {
                        Ok(msg) => msg,
                        Err(e) => break Some(format!("it printed what is not a protocol message ({e}): {}", short(&line))),
                    };
                    if let FromNode::Hello { protocol, .. } = msg {
                        if protocol != PROTOCOL_VERSION || said_hello {
                            break Some(format!("it speaks protocol {protocol}, not {PROTOCOL_VERSION}"));
                        }
                        said_hello = true;
                        continue;
                    }
                    match msg {
                        FromNode::Done { attempt_id, .. } | FromNode::Failed { attempt_id, .. } => {
                            if marked >= attempt_id || !err_open {
                                self.finish(proc, attempt_id, msg);
                            } else {
                                held = Some((attempt_id, msg, tokio::time::Instant::now() + LOG_GRACE));
                            }
                        }
                        other => { let _ = self.out.send(FromWorker::Node { msg: other }); }
                    }
                }
                line = err.next_line(), if err_open => match line {
                    Ok(Some(line)) => {
                        if let Some(id) = line.strip_prefix(END_MARKER) {
                            if let Ok(id) = id.trim().parse::<u64>() {
                                marked = id;
                                if held.as_ref().is_some_and(|(h, _, _)| *h <= id) {
                                    let (id, msg, _) = held.take().expect("held");
                                    self.finish(proc, id, msg);
                                }
                            }
                        } else if let Some(attempt_id) = proc.current() {
                            let _ = self.out.send(FromWorker::Node { msg: FromNode::Log { attempt_id, line } });
                        }
                    }
                    _ => err_open = false,
                },
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    if let Some((id, msg, _)) = held.take() {
                        self.finish(proc, id, msg);
                    }
                }
            }
        };
        if let Some((id, msg, _)) = held.take() {
            self.finish(proc, id, msg);
        }
        broken
    }

    /// Sends a line to an attempt's log.
    fn log(&self, attempt_id: u64, line: String) {
        let _ = self.out.send(FromWorker::Node { msg: FromNode::Log { attempt_id, line } });
    }

    /// Runs an attempt as a Slurm job: submits it, waits for it to call back, relays it, and
    /// reports how the job ended when it ended before the attempt did.
    async fn run_job(&self, slurm: Arc<Slurm>, binary: String, path: PathBuf, msg: ToNode, resources: Resources) {
        let ToNode::Start { attempt_id, task, .. } = &msg else { return };
        let (attempt_id, name) = (*attempt_id, format!("salt-{task}"));
        let (tx, mut input) = mpsc::unbounded_channel();
        let proc = Arc::new(Proc {
            pid: None,
            binary,
            input: tx,
            current: Mutex::new(Some(attempt_id)),
            dead: AtomicBool::new(false),
            job: Mutex::new(None),
            slurm: true,
        });
        {
            let mut state = self.lock();
            state.all.push(proc.clone());
            state.running.insert(attempt_id, proc.clone());
        }
        let (token, mut callback) = slurm.expect();
        let dir = slurm.job_dir(&token);
        let ended = self.job(&slurm, &token, &path, &name, &resources, &msg, &proc, &mut callback, &mut input).await;
        slurm.forget(&token);
        self.lock().all.retain(|p| !Arc::ptr_eq(p, &proc));
        if let Some(error) = ended
            && proc.current() == Some(attempt_id)
        {
            self.lock().running.remove(&attempt_id);
            let _ = self.out.send(FromWorker::Node { msg: FromNode::Failed { attempt_id, error } });
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The life of one job; the attempt's error when the job ended before the attempt did.
    #[allow(clippy::too_many_arguments)]
    async fn job(
        &self,
        slurm: &Slurm,
        token: &str,
        path: &Path,
        name: &str,
        resources: &Resources,
        msg: &ToNode,
        proc: &Arc<Proc>,
        callback: &mut tokio::sync::oneshot::Receiver<slurm::Callback>,
        input: &mut mpsc::UnboundedReceiver<String>,
    ) -> Option<Error> {
        let attempt_id = proc.current()?;
        let stopped = || Error::new(ErrorKind::Cancelled, "the attempt was stopped and its Slurm job cancelled");
        let (job, options) = match slurm.submit(token, path, name, resources).await {
            Ok(submitted) => submitted,
            Err(e) => return Some(Error::new(ErrorKind::Task, e)),
        };
        *proc.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
        self.log(attempt_id, format!("slurm: job {job} submitted (sbatch {})", options.join(" ")));
        if proc.dead.load(Ordering::SeqCst) {
            slurm::cancel(job);
            return Some(stopped());
        }
        // Until it calls back: it may wait in Slurm's queue, or end without starting the binary.
        let mut last_poll = tokio::time::Instant::now();
        // Slurm not answering for a while (a busy or restarting slurmctld) is not an end yet.
        let mut unknown = 0;
        let called = loop {
            tokio::select! {
                cb = &mut *callback => break cb.ok(),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if proc.dead.load(Ordering::SeqCst) {
                return Some(stopped());
            }
            if last_poll.elapsed() >= JOB_POLL {
                last_poll = tokio::time::Instant::now();
                match slurm::job_info(job).await {
                    Some(info) if info.ended() => break None,
                    Some(_) => unknown = 0,
                    None => {
                        unknown += 1;
                        if unknown >= JOB_UNKNOWN_POLLS {
                            slurm::cancel(job);
                            break None;
                        }
                    }
                }
            }
        };
        if let Some(cb) = called {
            self.log(attempt_id, format!("slurm: job {job} started"));
            if let Ok(line) = serde_json::to_string(msg) {
                let _ = proc.input.send(line);
            }
            let broken = self.relay(cb.proto_out, cb.proto_in, cb.log, input, proc).await;
            if broken.is_none() || proc.current() != Some(attempt_id) {
                // The attempt ended; its job ends as its input closes.
                return None;
            }
            if proc.dead.load(Ordering::SeqCst) {
                return Some(stopped());
            }
        }
        // The job ended (or hung up) before the attempt did: ask Slurm why.
        let deadline = tokio::time::Instant::now() + JOB_END_WITHIN;
        let info = loop {
            let info = slurm::job_info(job).await;
            if info.as_ref().is_none_or(slurm::JobInfo::ended) || tokio::time::Instant::now() >= deadline {
                break info;
            }
            if proc.dead.load(Ordering::SeqCst) {
                return Some(stopped());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let output: Vec<String> = std::fs::read_to_string(slurm.job_dir(token).join("slurm.out"))
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default();
        for line in &output {
            self.log(attempt_id, line.clone());
        }
        if proc.dead.load(Ordering::SeqCst) {
            return Some(stopped());
        }
        Some(slurm::job_error(job, info.as_ref(), &output))
    }

    /// Sends an attempt's end and makes its process idle.
    fn finish(&self, proc: &Arc<Proc>, id: u64, msg: FromNode) {
        let _ = self.out.send(FromWorker::Node { msg });
        let mut state = self.lock();
        state.running.remove(&id);
        if proc.current() == Some(id) {
            proc.set_current(None);
            if !proc.dead.load(Ordering::SeqCst) && !proc.slurm {
                state.idle.entry(proc.binary.clone()).or_default().push(proc.clone());
            }
        }
    }
}

/// Starts a node process. A binary just written to the cache may still be open for writing in
/// a process forked meanwhile (by this worker's other threads, until that child's exec closes
/// it): `ETXTBSY`, which passes; so that one error is retried a few times.
fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(2 * tries));
            }
            other => return other,
        }
    }
}

fn to_node_attempt(msg: &ToNode) -> Option<u64> {
    match msg {
        ToNode::Start { attempt_id, .. }
        | ToNode::Resolved { attempt_id, .. }
        | ToNode::Value { attempt_id, .. }
        | ToNode::Cancel { attempt_id } => Some(*attempt_id),
    }
}

fn short(line: &str) -> String {
    let mut s: String = line.chars().take(200).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// Fetches binaries from the server into the cache, once each, checked against their hash.
///
/// A cached file is checked again each time it is used: against the record of its size,
/// times and inode taken when its hash was last verified, and hashed again when they differ
/// (or when this worker has not verified it yet). One that does not match is deleted and
/// fetched again.
struct Fetcher {
    server: String,
    token: Option<String>,
    cache: PathBuf,
    lock: tokio::sync::Mutex<()>,
    /// The files verified by this worker, by sha256: what they looked like then.
    verified: Mutex<HashMap<String, Stamp>>,
}

/// What a cached file looked like when its hash was verified. Writing to the file, or
/// replacing it, changes its change time (ctime), which no one can set back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// The sha256 of the file at `path`, lowercase hex, read in pieces.
fn hash_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

impl Fetcher {
    fn new(options: &WorkerOptions) -> Self {
        Self {
            server: options.server.trim_end_matches('/').to_string(),
            token: options.token.clone(),
            cache: options.cache.clone(),
            lock: tokio::sync::Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stamp>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the cached file at `path` is still the binary `sha`: by its stamp when this
    /// worker verified it and it has not changed since, else by hashing it again. One that is
    /// not is deleted.
    async fn check_cached(&self, sha: &str, path: &Path) -> bool {
        let Ok(stamp) = Stamp::of(path) else { return false };
        if self.verified().get(sha) == Some(&stamp) {
            return true;
        }
        let file = path.to_path_buf();
        let got = tokio::task::spawn_blocking(move || hash_file(&file)).await;
        match got {
            Ok(Ok(got)) if got == sha => {
                // Stamped as it was before hashing: a change made meanwhile shows next time.
                self.verified().insert(sha.to_string(), stamp);
                true
            }
            got => {
                let why = match got {
                    Ok(Ok(got)) => format!("its sha256 is {got}"),
                    Ok(Err(e)) => format!("it cannot be read: {e}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(
                    binary = %sha,
                    path = %path.display(),
                    "cached binary {} does not match its hash ({why}): deleted, fetched again",
                    path.display()
                );
                self.verified().remove(sha);
                let _ = std::fs::remove_file(path);
                false
            }
        }
    }

    /// The path of the binary with this sha256, fetched if it is not cached.
    async fn get(&self, sha: &str) -> Result<PathBuf, String> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{sha}` is not a sha256"));
        }
        let path = self.cache.join(sha);
        let _guard = self.lock.lock().await;
        if path.exists() && self.check_cached(sha, &path).await {
            return Ok(path);
        }
        let url = format!("{}/api/v1/binaries/{sha}", self.server);
        let token = self.token.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut request = agent.get(&url);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let mut response = request.call().map_err(|e| format!("cannot fetch binary {url}: {e}"))?;
            let status = response.status().as_u16();
            if status >= 400 {
                let body = response.body_mut().read_to_string().unwrap_or_default();
                let said = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                    .unwrap_or(body);
                return Err(format!("cannot fetch binary {url}: the server answered {status}: {said}"));
            }
            response
                .body_mut()
                .with_config()
                .limit(u64::MAX)
                .read_to_vec()
                .map_err(|e| format!("cannot fetch binary {url}: {e}"))
        })
        .await
        .map_err(|e| e.to_string())??;
        let got = hex(&Sha256::digest(&bytes));
        if got != sha {
            return Err(format!(
                "binary {sha} fetched from the server does not match its hash (its sha256 is {got}); refused"
            ));
        }
        // Unique to this fetch: the connections to several servers share the cache.
        static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FETCHES.fetch_add(1, Ordering::Relaxed);
        let tmp = self.cache.join(format!(".{sha}.{}.{n}", std::process::id()));
        let (to, bytes_len) = (path.clone(), bytes.len());
        let write = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o755).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &to)
        });
        tracing::debug!("caching binary {sha} ({bytes_len} bytes)");
        write
            .await
            .map_err(|e| e.to_string())
            .and_then(|w| w.map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot cache binary {sha} in {}: {e}", self.cache.display()))?;
        if let Ok(stamp) = Stamp::of(&path) {
            self.verified().insert(sha.to_string(), stamp);
        }
        Ok(path)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
