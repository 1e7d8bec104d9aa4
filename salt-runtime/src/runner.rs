//! Running workflows from Rust: start a run, recover it, rerun part of it.
//!
//! The CLI is a thin layer over [`Runner`]; benchmarks and embedding programs use it directly.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::driver::Admit;
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Inline, Pool, PoolMode};
use crate::model::{NodeId, RunId, RunSnapshot, RunState, now_ms};
use crate::progress::{self, Progress, Transition};
use crate::registry::{Kind, Registry, TaskDescriptor};
use crate::run::{Capacity, Config, Core, Placement};
use crate::store::{self, Durability, Heartbeat, Lease, NewRun, Store};

/// Where attempts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Executor {
    /// In this process, on its async runtime: the fastest.
    #[default]
    Inline,
    /// Each attempt in a fresh process of this binary (`<bin> __salt exec`): isolated, killable.
    Process,
    /// Long-lived processes of this binary, each running many attempts one after the other:
    /// the isolation of `process` at a fraction of its cost.
    Pool,
}

impl Executor {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Inline => "inline",
            Executor::Process => "process",
            Executor::Pool => "pool",
        }
    }

    /// Every executor, in the order the command line lists them.
    pub const ALL: [Executor; 3] = [Executor::Inline, Executor::Process, Executor::Pool];
}

impl std::fmt::Display for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Executor {
    type Err = Error;

    /// Parses `inline`, `process` or `pool` (any case).
    fn from_str(s: &str) -> Result<Self> {
        Executor::ALL.into_iter().find(|e| e.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            Error::new(ErrorKind::Usage, format!("unknown executor `{s}`; expected one of `inline`, `process`, `pool`"))
        })
    }
}

pub use salt_core::run::RunOutcome;

/// Runs workflows of this binary against a store.
///
/// The workflows are those the binary registers with `#[workflow]`; they are named by their
/// registered name. A run is recorded in the SQLite database given to [`Runner::new`], so it can
/// be shown, recovered or rerun later, by this runner or by the binary's command line.
///
/// ```
/// use salt::prelude::*;
/// use salt::{RunState, Runner};
///
/// /// Says hello.
/// #[task]
/// async fn greet(name: String) -> String {
///     format!("hello, {name}")
/// }
///
/// /// Greets someone.
/// #[workflow]
/// async fn hello(name: String) -> salt::Result<String> {
///     greet(name).await
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// let db = tempfile::tempdir()?;
/// let runner = Runner::new(db.path().join("salt.db")).parallelism(2);
/// let outcome = runner.run("hello", serde_json::json!({"name": "salt"})).await?;
/// assert_eq!(outcome.state, RunState::Succeeded);
/// assert_eq!(outcome.output, Some(serde_json::json!("hello, salt")));
///
/// // An unknown workflow is an error that lists the ones there are.
/// let err = runner.run("goodbye", serde_json::json!({})).await.unwrap_err();
/// assert!(err.to_string().contains("no workflow `goodbye`"), "{err}");
/// # Ok(()) }
/// ```
///
/// Clones share one stream of transitions ([`Runner::subscribe`]).
#[derive(Debug, Clone)]
pub struct Runner {
    db: String,
    lease_ttl: std::time::Duration,
    executor: Executor,
    parallelism: usize,
    capacity: Capacity,
    pool_size: Option<usize>,
    durability: Durability,
    progress: Progress,
    handle_ctrl_c: bool,
    transitions: broadcast::Sender<Transition>,
    /// The store, opened by the first run and kept for the next ones (shared by clones).
    store: Arc<Mutex<Option<Arc<dyn Store>>>>,
    /// The tasks runs are made of: this binary's unless set ([`Runner::registry`]).
    registry: Option<&'static Registry>,
    /// Attempts go to remote workers through this dispatcher, from this binary (its sha256).
    remote: Option<(crate::remote::Dispatcher, String)>,
    /// With `remote`: one driver hosts all the runs of this runner and its clones, under one
    /// owner whose leases one heartbeat renews (made by the first run).
    shared: Arc<Mutex<Option<Shared>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("owner", &self.owner).finish()
    }
}

/// The driver a remote runner's runs share, and their lease owner.
struct Shared {
    admission: crate::driver::Admission,
    owner: String,
    heartbeat: Heartbeat,
}

/// How many transitions a subscriber may fall behind before it misses some
/// ([`broadcast::error::RecvError::Lagged`]).
pub const TRANSITIONS_BUFFER: usize = 4096;

/// With the process executor, how long a node may await its children before it gives up its
/// process (`SALT_PARK_AFTER_MS` overrides it).
pub const DEFAULT_PARK_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a run's lease lasts unless renewed (`SALT_LEASE_TTL_MS` overrides it): when an
/// orchestrator dies without releasing it, its run reads as `interrupted` after this long. The
/// lease is renewed every fifth of it.
pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// What the machine offers the nodes that ask for cores or memory: its cores
/// (`available_parallelism`) and its memory (`MemTotal` of `/proc/meminfo`, unlimited where it
/// cannot be read), unless `SALT_CORES` or `SALT_MEMORY_MB` (a whole number above zero) says
/// otherwise.
fn default_capacity() -> Capacity {
    let (cores, memory_mb) = machine_capacity();
    Capacity { cores, memory_mb: memory_mb.unwrap_or(u64::MAX) }
}

/// The cores and memory (MiB; `None` where it cannot be read) this machine offers the
/// attempts that ask for them: `available_parallelism` and `MemTotal` of `/proc/meminfo`,
/// unless `SALT_CORES` or `SALT_MEMORY_MB` (a whole number above zero) says otherwise.
pub fn machine_capacity() -> (u32, Option<u64>) {
    let (cores, memory_mb) = crate::command::machine();
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|&n| n > 0);
    (env("SALT_CORES").map_or(cores, |c| c.min(u32::MAX as u64) as u32), env("SALT_MEMORY_MB").or(memory_mb))
}

/// The default number of nodes that run at once: the number of cores.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4)
}

impl Runner {
    /// A runner on the database at `db` (a path or `sqlite://PATH`; created if missing),
    /// inline, one node per core.
    pub fn new(db: impl AsRef<std::ffi::OsStr>) -> Self {
        let lease_ttl = std::env::var("SALT_LEASE_TTL_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(DEFAULT_LEASE_TTL, std::time::Duration::from_millis);
        Self {
            db: db.as_ref().to_string_lossy().into_owned(),
            lease_ttl,
            executor: Executor::Inline,
            parallelism: default_parallelism(),
            capacity: default_capacity(),
            pool_size: None,
            durability: Durability::Normal,
            progress: Progress::Quiet,
            handle_ctrl_c: false,
            transitions: broadcast::channel(TRANSITIONS_BUFFER).0,
            store: Arc::default(),
            registry: None,
            remote: None,
            shared: Arc::default(),
        }
    }

    /// Runs are made of the tasks of `registry` instead of this binary's: a server drives the
    /// runs of a binary it does not link, from the registry of its manifest
    /// ([`Registry::from_manifest`]). Its attempts must then run elsewhere ([`Runner::remote`]).
    pub fn registry(mut self, registry: &'static Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Every attempt goes to the workers connected to `dispatcher`, each to one that serves
    /// its task's queue, which runs it in a process of the binary whose sha256 is `binary`.
    pub fn remote(mut self, dispatcher: crate::remote::Dispatcher, binary: impl Into<String>) -> Self {
        self.remote = Some((dispatcher, binary.into()));
        self
    }

    fn tasks(&self) -> Result<&'static Registry> {
        match self.registry {
            Some(r) => Ok(r),
            None => Registry::global(),
        }
    }

    /// A stream of the committed transitions of every run this runner (or a clone of it)
    /// drives from now on: each node's state changes, and the run's (`running`, `paused`,
    /// then its final state, which is always the last transition of a run). Each is sent
    /// after the store has committed it. A subscriber that falls more than
    /// [`TRANSITIONS_BUFFER`] transitions behind gets [`broadcast::error::RecvError::Lagged`]
    /// and can read the run's state from the store (`ops::show`) to catch up.
    ///
    /// ```no_run
    /// # async fn demo() -> salt_runtime::Result<()> {
    /// use salt_runtime::{Runner, progress::Transition};
    /// let runner = Runner::new(".salt/salt.db");
    /// let mut rx = runner.subscribe();
    /// tokio::spawn(async move {
    ///     while let Ok(t) = rx.recv().await {
    ///         println!("{}", serde_json::to_string(&t).unwrap_or_default());
    ///     }
    /// });
    /// runner.run("etl", serde_json::json!({})).await?;
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Where attempts run.
    pub fn executor(mut self, executor: Executor) -> Self {
        self.executor = executor;
        self
    }

    /// How many nodes may run at once (at least 1). Nodes parked on children they await do not
    /// count.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// How many CPU cores the nodes that ask for some (`#[task(cores = N)]`,
    /// `salt::command(…).cores(N)`) share: an attempt starts only when the cores its node asks
    /// for are free. Default: `SALT_CORES`, or the machine's cores. Nodes that ask for none are
    /// limited by the parallelism only. The runs this process drives at once share the cores:
    /// what the attempts of one hold, the others wait for.
    pub fn cores(mut self, cores: u32) -> Self {
        self.capacity.cores = cores;
        self
    }

    /// How much memory, in MiB, the nodes that ask for some (`memory_mb = M`) share. Default:
    /// `SALT_MEMORY_MB`, or the machine's memory.
    pub fn memory_mb(mut self, memory_mb: u64) -> Self {
        self.capacity.memory_mb = memory_mb;
        self
    }

    /// How many processes the `pool` executor keeps warm (default: the parallelism). It
    /// starts more while every process is busy, e.g. with bodies awaiting their children.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = Some(n.max(1));
        self
    }

    /// How hard each commit of the run is made to last: [`Durability::Normal`] (the default)
    /// survives a killed process, [`Durability::Full`] a power cut too.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How the run shows its progress.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Whether Ctrl-C and SIGTERM cancel the run (no new node starts, running attempts are
    /// stopped, the run is recorded `cancelled` and `recover` resumes it).
    pub fn handle_ctrl_c(mut self, yes: bool) -> Self {
        self.handle_ctrl_c = yes;
        self
    }

    /// How long the lease of a run this runner drives lasts unless renewed (at least 100 ms).
    pub fn lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.lease_ttl = ttl.max(std::time::Duration::from_millis(100));
        self
    }

    /// The database: a path or a URL.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// The store: opened (created, migrated) once, then kept.
    fn store(&self) -> Result<Arc<dyn Store>> {
        let mut cached = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let store = match &*cached {
            Some(store) => store.clone(),
            None => {
                let store: Arc<dyn Store> = Arc::from(store::open(&self.db).map_err(|e| e.into_error())?);
                *cached = Some(store.clone());
                store
            }
        };
        store.set_durability(self.durability).map_err(|e| e.into_error())?;
        Ok(store)
    }

    /// The workflow named `name`, or a clear error listing the ones there are.
    pub(crate) fn workflow(name: &str) -> Result<&'static TaskDescriptor> {
        Self::workflow_in(Registry::global()?, name)
    }

    fn workflow_in(registry: &'static Registry, name: &str) -> Result<&'static TaskDescriptor> {
        match registry.get(name) {
            Some(d) if d.kind == Kind::Workflow => Ok(d),
            Some(_) => Err(Error::new(ErrorKind::Usage, format!("`{name}` is a task, not a workflow"))),
            None => {
                let names: Vec<_> = registry.workflows().map(|d| d.name).collect();
                Err(Error::new(
                    ErrorKind::Usage,
                    format!("no workflow `{name}` in this binary; it has: {}", names.join(", ")),
                ))
            }
        }
    }

    /// The input a run of `workflow` gets: `input` if given, else its default; checked against
    /// the workflow's input type.
    pub(crate) fn input_for(workflow: &TaskDescriptor, input: Option<Value>) -> Result<Value> {
        let input = match input {
            Some(v) => v,
            None => match workflow.default_input {
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    Error::new(ErrorKind::Usage, format!("the default input of `{}` is not JSON: {e}", workflow.name))
                })?,
                None => {
                    let schema = (workflow.input_schema)();
                    return Err(Error::new(
                        ErrorKind::Input,
                        format!(
                            "workflow `{}` needs an input (--input JSON); it has no default. Its input schema:\n{}",
                            workflow.name,
                            serde_json::to_string_pretty(&schema).unwrap_or_default()
                        ),
                    ));
                }
            },
        };
        check_depth(&input)?;
        workflow.validate_input(&input)?;
        Ok(input)
    }

    /// The input a run of `workflow` gets when none is given: the default of its
    /// `#[workflow(input = …)]`. An error naming its input schema when it has none, or when
    /// `workflow` is not a workflow of this binary.
    pub fn default_input(workflow: &str) -> Result<Value> {
        Self::input_for(Self::workflow(workflow)?, None)
    }

    /// Starts a run of `workflow` with `input` and drives it to the end.
    pub async fn run(&self, workflow: &str, input: Value) -> Result<RunOutcome> {
        let (snapshot, store, lease) = self.create(workflow, input)?;
        self.drive(snapshot, store, lease, |_| Ok(())).await
    }

    /// Starts a run of `workflow` with `input` and drives it on a task of its own: returns once
    /// the run is stored, with the run's id and the task that ends with its outcome.
    pub fn spawn_run(&self, workflow: &str, input: Value) -> Result<(RunId, JoinHandle<Result<RunOutcome>>)> {
        let (snapshot, store, lease) = self.create(workflow, input)?;
        let run = snapshot.run.id;
        Ok((run, self.spawn_drive(snapshot, store, lease, |_| Ok(()))?))
    }

    /// [`Runner::recover`] on a task of its own: returns once the run is taken over.
    pub fn spawn_recover(&self, run: RunId) -> Result<JoinHandle<Result<RunOutcome>>> {
        let (snapshot, store, lease) = self.take(run, RECOVERABLE)?;
        self.spawn_drive(snapshot, store, lease, recover_all)
    }

    /// [`Runner::rerun_from`] on a task of its own: returns once the run is taken over and the
    /// nodes reset.
    pub fn spawn_rerun_from(&self, run: RunId, from: NodeId) -> Result<JoinHandle<Result<RunOutcome>>> {
        let (snapshot, store, lease) = self.take(run, RERUNNABLE)?;
        let nodes = snapshot.nodes.len();
        self.spawn_drive(snapshot, store, lease, move |o| {
            check_node(run, nodes, from)?;
            o.rerun_from(from)
        })
    }

    /// [`Runner::run_one`] on a task of its own: returns once the run is taken over and the
    /// node reset (or with the reason it cannot run alone).
    pub fn spawn_run_one(&self, run: RunId, node: NodeId) -> Result<JoinHandle<Result<RunOutcome>>> {
        let (snapshot, store, lease) = self.take(run, RUN_ONE)?;
        let nodes = snapshot.nodes.len();
        self.spawn_drive(snapshot, store, lease, move |o| reset_one(o, run, nodes, node))
    }

    /// Who takes the leases of this runner's runs: the shared driver's owner for a remote
    /// runner (started on first use), a new owner per run otherwise.
    fn owner(&self) -> Result<String> {
        if self.remote.is_none() {
            return Ok(store::new_owner());
        }
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = shared.as_ref() {
            return Ok(s.owner.clone());
        }
        let store = self.store()?;
        let owner = store::new_owner();
        let heartbeat =
            Heartbeat::for_owner(store.clone(), owner.clone(), self.lease_ttl).map_err(|e| e.into_error())?;
        let (driver, admission) = crate::driver::Driver::new(store, false);
        tokio::spawn(driver.run());
        *shared = Some(Shared { admission, owner: owner.clone(), heartbeat });
        Ok(owner)
    }

    /// Hosts a run on the shared driver; the task ends with its outcome, its lease released.
    fn spawn_shared(
        &self,
        snapshot: RunSnapshot,
        store: Arc<dyn Store>,
        lease: Lease,
        prepare: impl FnOnce(&mut Core) -> Result<()>,
    ) -> Result<JoinHandle<Result<RunOutcome>>> {
        let release = |e: Error| {
            let _ = store.release_run_lease(&lease);
            e
        };
        let core = self.core(snapshot, prepare).map_err(release)?;
        let run = core.run_id();
        let (admission, lease_watch) = {
            let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            let s = shared.as_ref().ok_or_else(|| release(Error::new(ErrorKind::Store, "the run host stopped")))?;
            (s.admission.clone(), s.heartbeat.watch())
        };
        let Some((dispatcher, binary)) = self.remote.clone() else {
            return Err(release(Error::new(ErrorKind::Usage, "a shared driver needs a remote executor")));
        };
        let (done, outcome) = tokio::sync::oneshot::channel();
        let observer = progress::Broadcast::new(progress::observer(self.progress), self.transitions.clone(), run);
        admission
            .admit(Admit {
                core,
                lease: lease.clone(),
                lease_watch: Some(lease_watch),
                observer: Box::new(observer),
                executor: (crate::remote::EXECUTOR, dispatcher.executor(binary)),
                parallelism: self.parallelism as u32,
                done,
            })
            .map_err(release)?;
        let transitions = self.transitions.clone();
        Ok(tokio::spawn(async move {
            let outcome = match outcome.await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::new(ErrorKind::Store, "the orchestrator stopped before the run ended")),
            };
            let _ = store.release_run_lease(&lease);
            send_final(&transitions, run, &outcome);
            outcome
        }))
    }

    /// Drives a run taken over (or created) on a task of its own, once `prepare` accepted it.
    fn spawn_drive(
        &self,
        snapshot: RunSnapshot,
        store: Arc<dyn Store>,
        lease: Lease,
        prepare: impl FnOnce(&mut Core) -> Result<()>,
    ) -> Result<JoinHandle<Result<RunOutcome>>> {
        if self.remote.is_some() {
            return self.spawn_shared(snapshot, store, lease, prepare);
        }
        let heartbeat = self.heartbeat(&store, &lease)?;
        let core = match self.core(snapshot, prepare) {
            Ok(core) => core,
            Err(e) => {
                heartbeat.stop();
                return Err(e);
            }
        };
        let this = self.clone();
        Ok(tokio::spawn(async move { this.drive_core(core, store, lease, heartbeat).await }))
    }

    /// Creates a run of `workflow` (its root node, holding its lease) and loads it.
    fn create(&self, workflow: &str, input: Value) -> Result<(RunSnapshot, Arc<dyn Store>, Lease)> {
        let descriptor = Self::workflow_in(self.tasks()?, workflow)?;
        check_depth(&input)?;
        descriptor.validate_input(&input)?;
        let store = self.store()?;
        let root = salt_core::run::root_node(&descriptor.spec(), &input, now_ms());
        let owner = self.owner()?;
        let run = store
            .create_run(NewRun {
                workflow: descriptor.name,
                input: &input,
                executor: self.executor.as_str(),
                parallelism: self.parallelism as u32,
                root: &root,
                lease: Some((&owner, self.lease_ttl)),
            })
            .map_err(|e| e.into_error())?;
        let lease = Lease { run, owner };
        match store.load(run) {
            Ok(snapshot) => Ok((snapshot, store, lease)),
            Err(e) => {
                let _ = store.release_run_lease(&lease);
                Err(e.into_error())
            }
        }
    }

    /// Resumes a failed, cancelled or interrupted run: every node that did not succeed runs
    /// again; no succeeded node runs twice.
    pub async fn recover(&self, run: RunId) -> Result<RunOutcome> {
        let (snapshot, store, lease) = self.take(run, RECOVERABLE)?;
        self.drive(snapshot, store, lease, recover_all).await
    }

    /// Resets `from` and everything downstream of it and runs them again; nothing upstream
    /// runs again (the parents of the reset nodes replay, binding the children they call the
    /// same way; from the first call that differs, the old children are superseded and the new
    /// calls spawn new nodes). Refused for a superseded node.
    pub async fn rerun_from(&self, run: RunId, from: NodeId) -> Result<RunOutcome> {
        let (snapshot, store, lease) = self.take(run, RERUNNABLE)?;
        let nodes = snapshot.nodes.len();
        self.drive(snapshot, store, lease, |o| {
            check_node(run, nodes, from)?;
            o.rerun_from(from)
        })
        .await
    }

    /// Runs exactly one node again (a body that calls otherwise than before supersedes the
    /// children it no longer calls the same way). Refused, with nothing run, when a node it
    /// depends on has not succeeded, or the node is superseded.
    pub async fn run_one(&self, run: RunId, node: NodeId) -> Result<RunOutcome> {
        let (snapshot, store, lease) = self.take(run, RUN_ONE)?;
        let nodes = snapshot.nodes.len();
        self.drive(snapshot, store, lease, |o| reset_one(o, run, nodes, node)).await
    }

    /// Takes the lease of a run and loads it; it must be in one of `allowed` states. Refused,
    /// naming the owner, while another orchestrator drives it.
    fn take(&self, run: RunId, allowed: &[RunState]) -> Result<(RunSnapshot, Arc<dyn Store>, Lease)> {
        let store = self.store()?;
        let lease = store.acquire_run_lease(run, &self.owner()?, self.lease_ttl).map_err(|e| e.into_error())?;
        let checked = store.load(run).map_err(|e| e.into_error()).and_then(|mut snapshot| {
            // Holding the lease, a run stored as running was left by an orchestrator that is gone.
            if matches!(snapshot.run.state, RunState::Running | RunState::Paused) {
                snapshot.run.state = RunState::Interrupted;
            }
            let state = snapshot.run.state;
            if allowed.contains(&state) {
                return Ok(snapshot);
            }
            let why = match state {
                RunState::Interrupted => format!("run {run} was interrupted; `recover` it first"),
                _ => format!("run {run} is {}", state.as_str()),
            };
            Err(Error::new(ErrorKind::Usage, why))
        });
        match checked {
            Ok(snapshot) => Ok((snapshot, store, lease)),
            Err(e) => {
                let _ = store.release_run_lease(&lease);
                Err(e)
            }
        }
    }

    async fn drive(
        &self,
        snapshot: RunSnapshot,
        store: Arc<dyn Store>,
        lease: Lease,
        prepare: impl FnOnce(&mut Core) -> Result<()>,
    ) -> Result<RunOutcome> {
        let heartbeat = self.heartbeat(&store, &lease)?;
        match self.core(snapshot, prepare) {
            Ok(core) => self.drive_core(core, store, lease, heartbeat).await,
            Err(e) => {
                heartbeat.stop();
                Err(e)
            }
        }
    }

    /// Renews the run's lease from a thread of its own, so that task code blocking the async
    /// runtime cannot let it expire; released when the run ends, however it ends.
    fn heartbeat(&self, store: &Arc<dyn Store>, lease: &Lease) -> Result<Heartbeat> {
        Heartbeat::start(store.clone(), lease.clone(), self.lease_ttl).map_err(|e| {
            let _ = store.release_run_lease(lease);
            e.into_error()
        })
    }

    /// The run core of a loaded run, prepared.
    fn core(&self, snapshot: RunSnapshot, prepare: impl FnOnce(&mut Core) -> Result<()>) -> Result<Core> {
        let registry = self.tasks()?;
        let park_after = std::env::var("SALT_PARK_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(DEFAULT_PARK_AFTER, std::time::Duration::from_millis);
        let config = Config {
            executor: self.executor_name(),
            placement: if self.remote.is_some() { Placement::Remote } else { Placement::Local },
            parallelism: self.parallelism,
            capacity: self.capacity,
            // Every run of this process shares its cores and memory.
            machine: Some(crate::run::Machine::process()),
            // Waiting on a long child holds no process where attempts hold one.
            park_after: (self.executor != Executor::Inline || self.remote.is_some()).then_some(park_after),
        };
        let mut core = Core::new(snapshot, registry, config, crate::run::now())?;
        prepare(&mut core)?;
        Ok(core)
    }

    fn executor_name(&self) -> &'static str {
        if self.remote.is_some() { crate::remote::EXECUTOR } else { self.executor.as_str() }
    }

    async fn drive_core(
        &self,
        core: Core,
        store: Arc<dyn Store>,
        lease: Lease,
        heartbeat: Heartbeat,
    ) -> Result<RunOutcome> {
        let run = core.run_id();
        let make: crate::driver::MakeExecutor = match (&self.remote, self.executor) {
            (Some((dispatcher, binary)), _) => dispatcher.executor(binary.clone()),
            (None, Executor::Inline) => {
                let registry = self.tasks()?;
                Box::new(move |events| Box::new(Inline::new(events, registry)))
            }
            (None, kind) => {
                let exe = match std::env::current_exe() {
                    Ok(exe) => exe,
                    Err(e) => {
                        heartbeat.stop();
                        let _ = store.release_run_lease(&lease);
                        return Err(Error::new(
                            ErrorKind::Usage,
                            format!("cannot find this binary to run nodes in: {e}"),
                        ));
                    }
                };
                let (pool_size, blobs) = (self.pool_size.unwrap_or(self.parallelism), store.blobs());
                Box::new(move |events| -> Box<dyn crate::executor::Executor> {
                    match kind {
                        Executor::Process => Box::new(Pool::new(PoolMode::Process, exe, blobs, events)),
                        _ => Box::new(Pool::new(PoolMode::Pool { size: pool_size }, exe, blobs, events)),
                    }
                })
            }
        };
        let observer = progress::Broadcast::new(progress::observer(self.progress), self.transitions.clone(), run);
        let lease_watch = Some(heartbeat.watch());
        let (name, parallelism) = (self.executor_name(), self.parallelism as u32);
        let outcome = crate::driver::drive_one(store, self.handle_ctrl_c, |done| Admit {
            core,
            lease,
            lease_watch,
            observer: Box::new(observer),
            executor: (name, make),
            parallelism,
            done,
        })
        .await;
        heartbeat.stop();
        send_final(&self.transitions, run, &outcome);
        outcome
    }
}

/// Sends a run's last transition: its final state, or `interrupted` when driving it failed.
fn send_final(transitions: &broadcast::Sender<Transition>, run: RunId, outcome: &Result<RunOutcome>) {
    match outcome {
        Ok(o) => progress::send_final(transitions, run, o.state, o.error.clone()),
        Err(e) => {
            progress::send_final(transitions, run, RunState::Interrupted, Some(Error::new(e.kind(), e.message())))
        }
    }
}

/// The states `recover` takes a run from.
const RECOVERABLE: &[RunState] = &[RunState::Failed, RunState::Cancelled, RunState::Interrupted, RunState::Queued];
/// The states `rerun --from` takes a run from.
const RERUNNABLE: &[RunState] = &[RunState::Succeeded, RunState::Failed, RunState::Cancelled, RunState::Interrupted];
/// The states `run-one` takes a run from.
const RUN_ONE: &[RunState] = &[RunState::Succeeded, RunState::Failed, RunState::Cancelled];

/// Resets every node that did not succeed.
fn recover_all(core: &mut Core) -> Result<()> {
    let unfinished = core.unfinished();
    core.reset(&unfinished);
    Ok(())
}

/// Resets one node to run alone; refused when its upstream has not succeeded.
fn reset_one(o: &mut Core, run: RunId, nodes: usize, node: NodeId) -> Result<()> {
    check_node(run, nodes, node)?;
    o.check_current(node)?;
    let unmet = o.unmet_upstream(node);
    if !unmet.is_empty() {
        let list: Vec<String> =
            unmet.iter().map(|(id, task, state)| format!("node {id} (`{task}`) is {}", state.as_str())).collect();
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "cannot run node {node} alone: its upstream has not succeeded ({}); use `recover` or `rerun --from`",
                list.join(", ")
            ),
        ));
    }
    o.reset(&[node]);
    // Its body may call otherwise now: what it no longer calls is superseded.
    o.mark_rerun(&[node]);
    Ok(())
}

/// Refuses an input nested deeper than the store keeps.
fn check_depth(input: &Value) -> Result<()> {
    if crate::model::too_deep(input) {
        return Err(Error::new(ErrorKind::Usage, crate::model::depth_message("the input")));
    }
    Ok(())
}

fn check_node(run: RunId, nodes: usize, node: NodeId) -> Result<()> {
    if node.index() < nodes {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Usage,
            format!("run {run} has no node {node} (it has nodes 0 to {})", nodes.saturating_sub(1)),
        ))
    }
}
