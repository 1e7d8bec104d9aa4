//! The remote executor: attempts run on workers connected to a server.
//!
//! A server drives runs with the same run core as a workflow binary, but links none of the
//! binary's code: its [`Runner`](crate::Runner) is given the registry of the binary's manifest
//! and a [`Dispatcher`]. The dispatcher keeps the workers connected to it (each serving some
//! queues with a number of slots) and the attempts waiting for one; it gives each attempt to a
//! worker that serves its task's queue and has a free slot. The worker runs the attempt in a
//! process of the binary (`<bin> __salt exec`, the protocol every executor speaks) and relays
//! the process's messages: the server sees exactly what a `pool` executor sees, addressed by
//! the attempt's id.
//!
//! Between server and worker, each message is one JSON object ([`ToWorker`], [`FromWorker`]);
//! the transport (a WebSocket in `salt`) is the caller's. A worker whose connection ends loses
//! its attempts: each ends with [`ErrorKind::Lost`], which the run core runs again at once on
//! another worker without counting it against the task's retries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::context::WireArg;
use crate::error::{Error, ErrorKind};
use crate::executor::{Answer, AttemptId, Event, Events, Executor, Launch};
use crate::protocol::{FromNode, Outcome, PROTOCOL_VERSION, ToNode};

/// The executor name recorded with the attempts of remote runs.
pub const EXECUTOR: &str = "remote";

/// A message from the server to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToWorker {
    /// Run an attempt (`msg` is a [`ToNode::Start`]) in a process of the binary with this
    /// sha256.
    Start {
        /// The binary's sha256, lowercase hex.
        binary: String,
        /// The start message for the node process.
        msg: ToNode,
        /// What the attempt needs and may take, for workers that hand attempts to a batch
        /// system (a Slurm worker asks for them in `sbatch`); others ignore it.
        #[serde(default, skip_serializing_if = "Resources::is_empty")]
        resources: Resources,
    },
    /// A message for the process running an attempt: an answer or a cancellation.
    Node {
        /// The message.
        msg: ToNode,
    },
    /// The server took the worker's hello: it is connected, serving these queues. A server
    /// that refuses a worker closes the connection instead (code 1008 when the refusal holds
    /// until the worker's token or queues change).
    Accepted {
        /// The queues it serves.
        queues: Vec<String>,
    },
}

/// What an attempt needs and may take, as a worker is told with each attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// The CPU cores it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// The memory it needs, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// The longest it may run, in ms (the task's `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Its priority among ready attempts (the task's `priority`; 0 by default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl Resources {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// What an attempt of a node with `policy` (its task's, with its call's choices over it)
    /// needs: its cores, memory, timeout and priority.
    fn of(policy: &crate::registry::Policy) -> Self {
        Self {
            cores: Some(policy.cores).filter(|&c| c > 0),
            memory_mb: Some(policy.memory_mb).filter(|&m| m > 0),
            timeout_ms: policy.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            priority: policy.priority,
        }
    }
}

/// A message from a worker to the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromWorker {
    /// The first message: who the worker is and what it takes.
    Hello(WorkerHello),
    /// A message of the process running an attempt.
    Node {
        /// The message.
        msg: FromNode,
    },
    /// The worker takes no new attempts; it finishes those it runs, then leaves.
    Draining,
}

/// Who a worker is and what it takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerHello {
    /// Its name (`host:pid` unless given).
    pub name: String,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// How many attempts it runs at once.
    pub slots: usize,
    /// The CPU cores its attempts may ask for together (those of its machine, or `--cores`);
    /// none counted when absent (a Slurm worker: the cluster places its jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// The memory, in MiB, its attempts may ask for together; none counted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// The protocol version it relays.
    pub protocol: u32,
}

/// A connected worker, as listed by the server.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// Its connection's number on this server.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// How many attempts it runs at once.
    pub slots: usize,
    /// How many it runs now.
    pub busy: usize,
    /// The cores its attempts may ask for together, if counted.
    pub cores: Option<u32>,
    /// The cores its running attempts asked for.
    pub cores_used: u32,
    /// The memory (MiB) its attempts may ask for together, if counted.
    pub memory_mb: Option<u64>,
    /// The memory (MiB) its running attempts asked for.
    pub memory_used_mb: u64,
    /// Whether it is draining (takes nothing new).
    pub draining: bool,
    /// When it connected (ms since the epoch).
    pub connected_at: i64,
}

/// The upper bounds, in seconds, of the buckets of [`DispatchStats::claim_buckets`].
pub const CLAIM_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// What a dispatcher has done since it was made, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatchStats {
    /// For each bound of [`CLAIM_BUCKETS`], how many attempts were given to a worker at most
    /// that many seconds after they were queued (cumulative, as a Prometheus histogram).
    pub claim_buckets: Vec<(f64, u64)>,
    /// How many attempts were given to a worker.
    pub claimed: u64,
    /// The seconds those attempts waited, in all.
    pub claim_seconds: f64,
    /// How many attempts given to a worker have ended (done, failed, stopped or lost).
    pub finished: u64,
}

#[derive(Default)]
struct Counters {
    /// Claims by bucket of [`CLAIM_BUCKETS`] (not cumulative); the last counts those above.
    claims: [u64; CLAIM_BUCKETS.len() + 1],
    claim_seconds: f64,
    finished: u64,
}

impl Counters {
    fn claimed(&mut self, waited: std::time::Duration) {
        let secs = waited.as_secs_f64();
        let bucket = CLAIM_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(CLAIM_BUCKETS.len());
        self.claims[bucket] += 1;
        self.claim_seconds += secs;
    }
}

/// Gives attempts to connected workers. Clones share the same workers and attempts.
#[derive(Clone, Default)]
pub struct Dispatcher {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Dispatcher")
            .field("workers", &inner.workers.len())
            .field("waiting", &inner.waiting.len())
            .field("attempts", &inner.attempts.len())
            .finish()
    }
}

/// Limits on how many attempts of a queue run at once, kept where every server sees them (a
/// server's database): the dispatcher takes a place in a limited queue before it gives one of
/// its attempts to a worker, and gives it back when the attempt ends or its body waits for
/// children or a signal (a waiting body holds no place, as it holds no worker slot).
pub trait QueueLimits: Send + Sync {
    /// Whether `queue` has a limit.
    fn limited(&self, queue: &str) -> bool;
    /// Takes a place in `queue` for the attempt `key`; false when the queue is full. With
    /// `force`, takes it even then: a body that waited resumes at once, so that a workflow never
    /// waits forever on the limit of the queue its own children run in.
    fn acquire(&self, queue: &str, key: &str, force: bool) -> bool;
    /// Gives back the place of the attempt `key` in `queue`.
    fn release(&self, queue: &str, key: &str);
}

#[derive(Default)]
struct Inner {
    workers: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// Attempts waiting for a worker, by their wire id.
    waiting: Vec<u64>,
    /// Every attempt given to the dispatcher and not yet ended, by wire id.
    attempts: HashMap<u64, Live>,
    by_at: HashMap<AttemptId, u64>,
    next_id: u64,
    /// Queues whose attempts wait, whoever serves them.
    inactive: HashSet<String>,
    /// Queues whose attempts go only to workers connected with one of these tokens (names).
    private: HashMap<String, Vec<String>>,
    /// Where the places of limited queues are taken, if anywhere.
    limits: Option<Arc<dyn QueueLimits>>,
    counters: Counters,
}

struct Conn {
    hello: WorkerHello,
    /// The name of the token it connected with, if any (for private queues).
    token: Option<String>,
    busy: usize,
    /// The cores and memory its running attempts asked for.
    cores_used: u32,
    memory_used: u64,
    draining: bool,
    connected_at: i64,
    outbox: mpsc::UnboundedSender<ToWorker>,
}

struct Live {
    at: AttemptId,
    /// When it was given to the dispatcher.
    queued_at: std::time::Instant,
    queue: String,
    priority: i32,
    binary: String,
    /// The start message, until a worker has it.
    start: Option<ToNode>,
    resources: Resources,
    worker: Option<u64>,
    /// It holds a place in its (limited) queue.
    place: bool,
    /// It asks for more cores or memory than any worker of its queue has (said once).
    too_big: bool,
    /// Stopped by its run: whatever still comes of it is dropped.
    stopped: bool,
    /// The calls of its body that wait for a child or a signal, not yet answered: while there
    /// are some, the body is blocked and holds no slot of its worker (a workflow waiting for
    /// its children must not keep them from running).
    blocked: HashSet<u64>,
    events: Events,
}

impl Dispatcher {
    /// A dispatcher with no workers.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The executor of one run, whose attempts run processes of `binary` (its sha256).
    pub(crate) fn executor(&self, binary: String) -> crate::driver::MakeExecutor {
        let dispatcher = self.clone();
        Box::new(move |events| Box::new(Remote { dispatcher, binary, events, mine: HashSet::new() }))
    }

    /// A worker connected: attempts are sent to it through `outbox` from now on. Its messages
    /// go to [`Connection::receive`]; dropping the connection loses its attempts.
    pub fn connect(&self, hello: WorkerHello, outbox: mpsc::UnboundedSender<ToWorker>) -> Connection {
        self.connect_as(hello, None, outbox)
    }

    /// [`connect`](Self::connect) for a worker that presented the token named `token`: it gets
    /// the attempts of a private queue (see [`set_private`](Self::set_private)) only while the
    /// queue names that token.
    pub fn connect_as(
        &self,
        hello: WorkerHello,
        token: Option<String>,
        outbox: mpsc::UnboundedSender<ToWorker>,
    ) -> Connection {
        let mut inner = self.lock();
        inner.next_conn += 1;
        let id = inner.next_conn;
        let connected_at = crate::model::now_ms();
        let conn = Conn { hello, token, busy: 0, cores_used: 0, memory_used: 0, draining: false, connected_at, outbox };
        inner.workers.insert(id, conn);
        inner.pump();
        Connection { dispatcher: self.clone(), id }
    }

    /// The connected workers.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let inner = self.lock();
        inner
            .workers
            .iter()
            .map(|(id, c)| WorkerInfo {
                id: *id,
                name: c.hello.name.clone(),
                queues: c.hello.queues.clone(),
                slots: c.hello.slots,
                busy: c.busy,
                cores: c.hello.cores,
                cores_used: c.cores_used,
                memory_mb: c.hello.memory_mb,
                memory_used_mb: c.memory_used,
                draining: c.draining,
                connected_at: c.connected_at,
            })
            .collect()
    }

    /// Limits the attempts of some queues running at once, through `limits`.
    pub fn set_limits(&self, limits: Arc<dyn QueueLimits>) {
        self.lock().limits = Some(limits);
    }

    /// Gives waiting attempts to free workers again: for places in limited queues that other
    /// servers gave back.
    pub fn pump(&self) {
        self.lock().pump();
    }

    /// Makes `queue` active (its attempts go to workers) or inactive (they wait).
    pub fn set_active(&self, queue: &str, active: bool) {
        let mut inner = self.lock();
        if active {
            inner.inactive.remove(queue);
            inner.pump();
        } else {
            inner.inactive.insert(queue.to_string());
        }
    }

    /// Makes `queue` private to the tokens named `tokens` (its attempts go only to workers
    /// connected with one of them), or open to every worker when `tokens` is empty. Checked at
    /// each dispatch: a worker connected before the change gets nothing it may no longer take.
    pub fn set_private(&self, queue: &str, tokens: Vec<String>) {
        let mut inner = self.lock();
        let changed = if tokens.is_empty() {
            inner.private.remove(queue).is_some()
        } else {
            inner.private.insert(queue.to_string(), tokens.clone()) != Some(tokens)
        };
        if changed {
            inner.pump();
        }
    }

    /// What this dispatcher has done since it was made: how long attempts waited for a worker,
    /// how many ended.
    pub fn stats(&self) -> DispatchStats {
        let inner = self.lock();
        let c = &inner.counters;
        let mut total = 0;
        let claim_buckets = CLAIM_BUCKETS
            .iter()
            .zip(c.claims)
            .map(|(bound, n)| {
                total += n;
                (*bound, total)
            })
            .collect();
        DispatchStats {
            claim_buckets,
            claimed: c.claims.iter().sum(),
            claim_seconds: c.claim_seconds,
            finished: c.finished,
        }
    }

    /// The attempts of `run` that wait for a worker of their queue, oldest first: what the
    /// server's views call `queued` (see [`crate::store::Queued`]).
    pub fn queued(&self, run: crate::model::RunId) -> Vec<crate::store::Queued> {
        let inner = self.lock();
        let now = (std::time::Instant::now(), crate::model::now_ms());
        inner
            .waiting
            .iter()
            .filter_map(|id| inner.attempts.get(id))
            .filter(|live| live.at.run == run && !live.stopped)
            .map(|live| crate::store::Queued {
                node: live.at.node,
                attempt: live.at.attempt,
                queue: live.queue.clone(),
                since: now.1 - i64::try_from(now.0.duration_since(live.queued_at).as_millis()).unwrap_or(0),
            })
            .collect()
    }

    /// How many attempts wait for a worker, by queue.
    pub fn waiting(&self) -> BTreeMap<String, usize> {
        let inner = self.lock();
        let mut depth = BTreeMap::new();
        for id in &inner.waiting {
            if let Some(live) = inner.attempts.get(id) {
                *depth.entry(live.queue.clone()).or_insert(0) += 1;
            }
        }
        depth
    }
}

impl Inner {
    /// Call `call` of attempt `id` blocks its body: the first one frees the body's slot, and
    /// its place in a limited queue.
    fn block(&mut self, id: u64, call: u64) {
        let Some(live) = self.attempts.get_mut(&id) else { return };
        if live.blocked.insert(call)
            && live.blocked.len() == 1
            && let Some(c) = live.worker.and_then(|w| self.workers.get_mut(&w))
        {
            c.busy = c.busy.saturating_sub(1);
            c.give_back(&live.resources);
            if live.place
                && let Some(limits) = &self.limits
            {
                limits.release(&live.queue, &place_key(live.at));
                live.place = false;
            }
            self.pump();
        }
    }

    /// Call `call` of attempt `id` was answered: the body runs again, in a slot (and, in a
    /// limited queue, a place taken even when the queue is full; see [`QueueLimits::acquire`]).
    fn unblock(&mut self, id: u64, call: u64) {
        let Some(live) = self.attempts.get_mut(&id) else { return };
        if live.blocked.remove(&call)
            && live.blocked.is_empty()
            && let Some(c) = live.worker.and_then(|w| self.workers.get_mut(&w))
        {
            c.busy += 1;
            c.take(&live.resources);
            if let Some(limits) = &self.limits
                && limits.limited(&live.queue)
            {
                live.place = limits.acquire(&live.queue, &place_key(live.at), true);
            }
        }
    }

    /// Gives waiting attempts to free workers, highest priority first, then oldest.
    fn pump(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.sort_by_key(|id| (std::cmp::Reverse(self.attempts.get(id).map_or(0, |l| l.priority)), *id));
        // Limited queues found full in this pass: their other attempts wait without asking.
        let mut full: HashSet<String> = HashSet::new();
        // Workers kept in this pass for an attempt too big for what they have free now, so
        // that smaller sized attempts behind it do not take what frees up first, for ever
        // (attempts that ask for nothing but a slot are not held back).
        let mut kept: HashSet<u64> = HashSet::new();
        for id in waiting {
            let Some(live) = self.attempts.get_mut(&id) else { continue };
            if self.inactive.contains(&live.queue) || full.contains(&live.queue) {
                self.waiting.push(id);
                continue;
            }
            let private = self.private.get(&live.queue);
            let serves = |c: &Conn| {
                !c.draining
                    && c.hello.queues.contains(&live.queue)
                    && private.is_none_or(|names| c.token.as_ref().is_some_and(|t| names.contains(t)))
            };
            let sized = live.resources.cores.is_some() || live.resources.memory_mb.is_some();
            let free = self
                .workers
                .iter_mut()
                .filter(|(w, c)| {
                    (!sized || !kept.contains(w))
                        && serves(c)
                        && c.busy < c.hello.slots
                        && c.fits(&live.resources, false)
                })
                .min_by_key(|(_, c)| c.busy * 1000 / c.hello.slots.max(1));
            let Some((conn, c)) = free else {
                if sized {
                    let could = self
                        .workers
                        .iter()
                        .filter(|(w, c)| !kept.contains(w) && serves(c) && c.fits(&live.resources, true))
                        .min_by_key(|(_, c)| (c.cores_used, c.memory_used));
                    match could {
                        Some((w, _)) => {
                            kept.insert(*w);
                        }
                        None if !live.too_big && self.workers.values().any(serves) => {
                            live.too_big = true;
                            tracing::warn!(
                                run = live.at.run.get(),
                                node = live.at.node.get(),
                                queue = %live.queue,
                                "node {} of run {} asks for {} cores and {} MiB, more than any worker of queue `{}` has: it waits for one that has them",
                                live.at.node.get(),
                                live.at.run.get(),
                                live.resources.cores.unwrap_or(0),
                                live.resources.memory_mb.unwrap_or(0),
                                live.queue
                            );
                        }
                        None => {}
                    }
                }
                self.waiting.push(id);
                continue;
            };
            if !live.place
                && let Some(limits) = &self.limits
                && limits.limited(&live.queue)
            {
                if !limits.acquire(&live.queue, &place_key(live.at), false) {
                    full.insert(live.queue.clone());
                    self.waiting.push(id);
                    continue;
                }
                live.place = true;
            }
            let Some(start) = live.start.take() else { continue };
            let resources = live.resources.clone();
            if c.outbox.send(ToWorker::Start { binary: live.binary.clone(), msg: start.clone(), resources }).is_err() {
                // The connection is closing; its end will be handled. Keep the attempt.
                live.start = Some(start);
                self.waiting.push(id);
                continue;
            }
            c.busy += 1;
            c.take(&live.resources);
            live.worker = Some(*conn);
            self.counters.claimed(live.queued_at.elapsed());
        }
    }

    /// An attempt ended on its worker (or was dropped): frees its slot.
    fn end(&mut self, id: u64) -> Option<Live> {
        let live = self.attempts.remove(&id)?;
        if live.worker.is_some() {
            self.counters.finished += 1;
        }
        if live.blocked.is_empty()
            && let Some(c) = live.worker.and_then(|w| self.workers.get_mut(&w))
        {
            c.busy = c.busy.saturating_sub(1);
            c.give_back(&live.resources);
        }
        if live.place
            && let Some(limits) = &self.limits
        {
            limits.release(&live.queue, &place_key(live.at));
        }
        if self.by_at.get(&live.at) == Some(&id) {
            self.by_at.remove(&live.at);
        }
        self.waiting.retain(|w| *w != id);
        Some(live)
    }
}

/// The name of an attempt's place in a limited queue: unique across servers.
fn place_key(at: AttemptId) -> String {
    format!("{}/{}/{}", at.run.get(), at.node.get(), at.attempt)
}

impl Conn {
    /// Whether an attempt that needs `need` fits in what this worker has free now (`idle`: in
    /// all it has, once its running attempts end).
    fn fits(&self, need: &Resources, idle: bool) -> bool {
        let (cores_used, memory_used) = if idle { (0, 0) } else { (self.cores_used, self.memory_used) };
        let cores = match (self.hello.cores, need.cores) {
            (Some(has), Some(asks)) => u64::from(cores_used) + u64::from(asks) <= u64::from(has),
            _ => true,
        };
        let memory = match (self.hello.memory_mb, need.memory_mb) {
            (Some(has), Some(asks)) => memory_used.saturating_add(asks) <= has,
            _ => true,
        };
        cores && memory
    }

    /// An attempt that needs `need` starts (or resumes) on it.
    fn take(&mut self, need: &Resources) {
        self.cores_used = self.cores_used.saturating_add(need.cores.unwrap_or(0));
        self.memory_used = self.memory_used.saturating_add(need.memory_mb.unwrap_or(0));
    }

    /// An attempt that needed `need` ended (or waits for its children).
    fn give_back(&mut self, need: &Resources) {
        self.cores_used = self.cores_used.saturating_sub(need.cores.unwrap_or(0));
        self.memory_used = self.memory_used.saturating_sub(need.memory_mb.unwrap_or(0));
    }
}

/// A worker's connection to a [`Dispatcher`]. Dropping it ends the connection: the attempts
/// the worker was running are lost (and run again elsewhere).
pub struct Connection {
    dispatcher: Dispatcher,
    id: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("id", &self.id).finish()
    }
}

impl Connection {
    /// The connection's number (as in [`WorkerInfo::id`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Handles one message of the worker. An error means the worker broke the protocol: the
    /// caller should close the connection (its attempts are then lost).
    pub fn receive(&self, msg: FromWorker) -> Result<(), String> {
        let mut inner = self.dispatcher.lock();
        match msg {
            FromWorker::Hello(_) => Err("a second hello".into()),
            FromWorker::Draining => {
                let Some(c) = inner.workers.get_mut(&self.id) else { return Ok(()) };
                c.draining = true;
                let (name, outbox) = (c.hello.name.clone(), c.outbox.clone());
                // Bodies blocked on their children would hold the worker until they are done
                // (which may need the worker's slots): they run again elsewhere, replaying
                // what they did, and their processes here are stopped.
                let blocked: Vec<u64> = inner
                    .attempts
                    .iter()
                    .filter(|(_, l)| l.worker == Some(self.id) && !l.blocked.is_empty() && !l.stopped)
                    .map(|(id, _)| *id)
                    .collect();
                for id in blocked {
                    let Some(live) = inner.attempts.get_mut(&id) else { continue };
                    live.stopped = true;
                    let (at, events) = (live.at, live.events.clone());
                    inner.by_at.remove(&at);
                    let _ = outbox.send(ToWorker::Node { msg: ToNode::Cancel { attempt_id: id } });
                    let error = Error::new(ErrorKind::Lost, format!("worker `{name}` is draining"));
                    let _ = events.send(Event::Finished { at, result: Err(error) });
                }
                Ok(())
            }
            FromWorker::Node { msg } => {
                let Some(id) = msg.attempt_id() else { return Ok(()) };
                let Some(live) = inner.attempts.get(&id) else { return Ok(()) };
                if live.worker != Some(self.id) {
                    return Err(format!("a message of attempt {id}, which this worker does not run"));
                }
                let (at, stopped, events) = (live.at, live.stopped, live.events.clone());
                let event = match msg {
                    FromNode::Hello { .. } => return Ok(()),
                    FromNode::Mutate { mutations, .. } => {
                        let by_ref = mutations.iter().any(|m| {
                            matches!(m, crate::context::Mutation::Spawn(s) if s.args.iter().any(|(_, a)| matches!(a, WireArg::Blob(_))))
                        });
                        if by_ref {
                            inner.end(id);
                            let error = Error::new(
                                ErrorKind::Protocol,
                                "a remote attempt passed a value by reference; remote attempts pass values inline",
                            );
                            Event::Finished { at, result: Err(error) }
                        } else {
                            Event::Mutate { at, mutations }
                        }
                    }
                    FromNode::Await { id: call, seq, .. } => {
                        inner.block(id, call);
                        Event::Await { at, call, seq }
                    }
                    FromNode::Journal { id: call, seq, kind, value, .. } => {
                        Event::Journal { at, call, seq, kind, value }
                    }
                    FromNode::Wait { id: call, wait, .. } => {
                        inner.block(id, call);
                        Event::Wait { at, call, wait }
                    }
                    FromNode::Log { line, .. } => Event::Log { at, line },
                    FromNode::Done { output, blob, .. } => {
                        inner.end(id);
                        inner.pump();
                        let result = match blob {
                            None => Ok(output),
                            Some(_) => Err(Error::new(
                                ErrorKind::Protocol,
                                "a remote attempt passed its output by reference; remote attempts pass values inline",
                            )),
                        };
                        Event::Finished { at, result }
                    }
                    FromNode::Failed { error, .. } => {
                        inner.end(id);
                        inner.pump();
                        Event::Finished { at, result: Err(error) }
                    }
                };
                if !stopped {
                    let _ = events.send(event);
                }
                Ok(())
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut inner = self.dispatcher.lock();
        let Some(conn) = inner.workers.remove(&self.id) else { return };
        let lost: Vec<u64> =
            inner.attempts.iter().filter(|(_, l)| l.worker == Some(self.id)).map(|(id, _)| *id).collect();
        for id in lost {
            let Some(live) = inner.end(id) else { continue };
            if !live.stopped {
                tracing::warn!(
                    worker = %conn.hello.name,
                    run = live.at.run.get(),
                    node = live.at.node.get(),
                    attempt = live.at.attempt,
                    queue = %live.queue,
                    "worker lost: node {} of run {} fails its attempt {}",
                    live.at.node,
                    live.at.run,
                    live.at.attempt
                );
                let error = Error::new(
                    ErrorKind::Lost,
                    format!("worker `{}` was lost while it ran this attempt", conn.hello.name),
                );
                let _ = live.events.send(Event::Finished { at: live.at, result: Err(error) });
            }
        }
        inner.pump();
    }
}

/// The executor of one run: hands its attempts to the dispatcher.
struct Remote {
    dispatcher: Dispatcher,
    binary: String,
    events: Events,
    /// This run's attempts not yet ended.
    mine: HashSet<AttemptId>,
}

impl Executor for Remote {
    fn start(&mut self, launch: Launch) {
        let Launch { at, task, input, policy } = launch;
        let resources = Resources::of(&policy);
        let mut inner = self.dispatcher.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let start = ToNode::Start {
            attempt_id: id,
            run: at.run,
            node: at.node,
            task: task.name.to_string(),
            attempt: at.attempt,
            input,
            input_blobs: BTreeMap::new(),
            blobs: None,
        };
        inner.attempts.insert(
            id,
            Live {
                at,
                queue: policy.queue.to_string(),
                priority: policy.priority,
                binary: self.binary.clone(),
                start: Some(start),
                resources,
                queued_at: std::time::Instant::now(),
                worker: None,
                place: false,
                too_big: false,
                stopped: false,
                blocked: HashSet::new(),
                events: self.events.clone(),
            },
        );
        inner.by_at.insert(at, id);
        inner.waiting.push(id);
        self.mine.insert(at);
        inner.pump();
    }

    fn answer(&mut self, at: AttemptId, call: u64, answer: Answer) {
        let mut inner = self.dispatcher.lock();
        let Some(id) = inner.by_at.get(&at).copied() else { return };
        inner.unblock(id, call);
        let Some(c) = inner.attempts.get(&id).and_then(|l| l.worker).and_then(|w| inner.workers.get(&w)) else {
            return;
        };
        let msg = match answer {
            Answer::Resolved(Ok(v)) => ToNode::Resolved { attempt_id: id, id: call, result: Outcome::Ok(v) },
            Answer::Resolved(Err(e)) => ToNode::Resolved { attempt_id: id, id: call, result: Outcome::Err(e) },
            Answer::Value(value) => ToNode::Value { attempt_id: id, id: call, value },
        };
        let _ = c.outbox.send(ToWorker::Node { msg });
    }

    fn stop(&mut self, at: AttemptId) {
        self.mine.remove(&at);
        let mut inner = self.dispatcher.lock();
        let Some(id) = inner.by_at.remove(&at) else { return };
        let Some(live) = inner.attempts.get_mut(&id) else { return };
        live.stopped = true;
        match live.worker {
            // Not on a worker yet: forget it.
            None => {
                inner.end(id);
            }
            // The worker stops it and reports its end, which frees the slot.
            Some(w) => {
                if let Some(c) = inner.workers.get(&w) {
                    let _ = c.outbox.send(ToWorker::Node { msg: ToNode::Cancel { attempt_id: id } });
                }
            }
        }
    }

    fn ended(&mut self, at: AttemptId) {
        self.mine.remove(&at);
    }

    fn shutdown(&mut self) {
        for at in std::mem::take(&mut self.mine) {
            self.stop(at);
        }
    }
}

/// What a worker says first, for this binary's protocol: its attempts may ask for `cores`
/// and `memory_mb` together (none counted when `None`).
pub fn hello(
    name: String,
    queues: Vec<String>,
    slots: usize,
    cores: Option<u32>,
    memory_mb: Option<u64>,
) -> FromWorker {
    FromWorker::Hello(WorkerHello { name, queues, slots, cores, memory_mb, protocol: PROTOCOL_VERSION })
}

/// Whether a worker's hello speaks this server's protocol; the reason when not.
pub fn check_hello(hello: &WorkerHello) -> Result<(), String> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(format!("the worker speaks protocol {}, this server {}", hello.protocol, PROTOCOL_VERSION));
    }
    if hello.slots == 0 || hello.queues.is_empty() {
        return Err("a worker needs at least one slot and one queue".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{NodeId, RunId};

    /// A worker connected to `d` serving `default` with `slots`, `cores` and `memory_mb`.
    fn worker(
        d: &Dispatcher,
        slots: usize,
        cores: Option<u32>,
        memory_mb: Option<u64>,
    ) -> (Connection, mpsc::UnboundedReceiver<ToWorker>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hello = WorkerHello {
            name: "w".into(),
            queues: vec!["default".into()],
            slots,
            cores,
            memory_mb,
            protocol: PROTOCOL_VERSION,
        };
        (d.connect(hello, tx), rx)
    }

    /// The nodes of the attempts `rx` was told to start since last asked, with their wire ids.
    fn started(rx: &mut mpsc::UnboundedReceiver<ToWorker>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let ToWorker::Start { msg: ToNode::Start { attempt_id, node, .. }, .. } = m {
                out.push((node.get(), attempt_id));
            }
        }
        out
    }

    /// Starts node `node` of run 1 on `ex`, asking for `cores` and `memory_mb`, at `priority`.
    fn launch(ex: &mut Box<dyn Executor>, node: u64, cores: u32, memory_mb: u64, priority: i32) {
        use salt_core::run::Catalog as _;
        let task = crate::registry::Registry::global().unwrap().spec(crate::command::TASK).unwrap();
        let policy = crate::registry::Policy { cores, memory_mb, priority, ..task.policy };
        let at = AttemptId { run: RunId::new(1), node: NodeId::new(node), attempt: 1 };
        ex.start(Launch { at, task, input: json!({}), policy });
    }

    /// The attempt of wire id `id` on worker `conn` ended.
    fn end(conn: &Connection, id: u64) {
        let error = Error::new(ErrorKind::Task, "done");
        conn.receive(FromWorker::Node { msg: FromNode::Failed { attempt_id: id, error } }).unwrap();
    }

    fn executor(d: &Dispatcher) -> (Box<dyn Executor>, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (d.executor("bin".into())(tx), rx)
    }

    #[test]
    fn a_worker_gets_no_more_cores_or_memory_than_it_has() {
        let d = Dispatcher::new();
        let (conn, mut rx) = worker(&d, 8, Some(4), Some(1000));
        let (mut ex, _events) = executor(&d);
        launch(&mut ex, 1, 2, 0, 0);
        launch(&mut ex, 2, 2, 0, 0);
        launch(&mut ex, 3, 2, 0, 0);
        let first = started(&mut rx);
        assert_eq!(first.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2], "two 2-core attempts on 4 cores");
        end(&conn, first[0].1);
        assert_eq!(started(&mut rx).iter().map(|s| s.0).collect::<Vec<_>>(), [3]);
        // Memory likewise. The attempt that waits for memory keeps the worker from the sized
        // attempts behind it, not from those that ask for nothing but a slot.
        launch(&mut ex, 4, 0, 600, 0);
        launch(&mut ex, 5, 0, 600, 0);
        launch(&mut ex, 6, 0, 100, 0);
        launch(&mut ex, 7, 0, 0, 0);
        let now = started(&mut rx);
        assert_eq!(now.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 7]);
        let info = &d.workers()[0];
        assert_eq!((info.cores_used, info.memory_used_mb, info.busy), (4, 600, 4));
        end(&conn, now[0].1);
        assert_eq!(started(&mut rx).iter().map(|s| s.0).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn a_big_attempt_goes_where_it_fits_and_is_not_starved_by_small_ones() {
        let d = Dispatcher::new();
        let (small, mut small_rx) = worker(&d, 8, Some(2), None);
        let (big, mut big_rx) = worker(&d, 8, Some(4), None);
        let (mut ex, _events) = executor(&d);
        launch(&mut ex, 1, 4, 0, 0);
        assert_eq!(started(&mut big_rx).iter().map(|s| s.0).collect::<Vec<_>>(), [1]);
        assert!(started(&mut small_rx).is_empty());
        // The 4-core worker is full; a 4-core attempt waits for it, and the 1-core attempts of
        // lower priority behind it go to the other worker, never to the one it waits for.
        launch(&mut ex, 2, 4, 0, 5);
        for n in 3..=6 {
            launch(&mut ex, n, 1, 0, 0);
        }
        assert!(started(&mut big_rx).is_empty());
        let on_small = started(&mut small_rx);
        assert_eq!(on_small.iter().map(|s| s.0).collect::<Vec<_>>(), [3, 4]);
        let first = d.lock().by_at.get(&AttemptId { run: RunId::new(1), node: NodeId::new(1), attempt: 1 }).copied();
        end(&big, first.unwrap());
        assert_eq!(started(&mut big_rx).iter().map(|s| s.0).collect::<Vec<_>>(), [2], "the big one first");
        end(&small, on_small[0].1);
        assert_eq!(started(&mut small_rx).iter().map(|s| s.0).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn an_attempt_too_big_for_every_worker_waits_and_others_go_on() {
        let d = Dispatcher::new();
        let (_conn, mut rx) = worker(&d, 4, Some(2), Some(100));
        let (mut ex, _events) = executor(&d);
        launch(&mut ex, 1, 8, 0, 9);
        launch(&mut ex, 2, 0, 500, 9);
        launch(&mut ex, 3, 1, 50, 0);
        assert_eq!(started(&mut rx).iter().map(|s| s.0).collect::<Vec<_>>(), [3]);
        assert_eq!(d.waiting().get("default"), Some(&2));
        // A worker that has them takes them.
        let (_big, mut big_rx) = worker(&d, 4, Some(16), Some(1000));
        assert_eq!(started(&mut big_rx).iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_body_waiting_for_its_children_holds_no_cores_and_a_worker_that_counts_none_takes_all() {
        let d = Dispatcher::new();
        let (conn, mut rx) = worker(&d, 4, Some(2), None);
        let (mut ex, _events) = executor(&d);
        launch(&mut ex, 1, 2, 0, 0);
        launch(&mut ex, 2, 2, 0, 0);
        let first = started(&mut rx);
        assert_eq!(first.iter().map(|s| s.0).collect::<Vec<_>>(), [1]);
        conn.receive(FromWorker::Node { msg: FromNode::Await { attempt_id: first[0].1, id: 1, seq: 0 } }).unwrap();
        assert_eq!(started(&mut rx).iter().map(|s| s.0).collect::<Vec<_>>(), [2]);

        let d = Dispatcher::new();
        let (_conn, mut rx) = worker(&d, 3, None, None);
        let (mut ex, _events) = executor(&d);
        for n in 1..=3 {
            launch(&mut ex, n, 64, 1 << 20, 0);
        }
        assert_eq!(started(&mut rx).len(), 3, "a worker that counts nothing (Slurm) is bound by its slots only");
    }

    #[test]
    fn a_worker_is_told_the_cores_and_memory_of_a_node_and_nothing_when_nothing_is_asked() {
        let task = crate::registry::Registry::global().unwrap().task(crate::command::TASK).unwrap();
        let r = Resources::of(&crate::registry::Policy { cores: 2, memory_mb: 512, ..task.policy });
        assert_eq!(r, Resources { cores: Some(2), memory_mb: Some(512), timeout_ms: None, priority: 0 });
        let start = ToWorker::Start {
            binary: "b".into(),
            msg: ToNode::Cancel { attempt_id: 1 },
            resources: Resources { timeout_ms: Some(30_000), priority: -2, ..r },
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap()["resources"],
            json!({"cores": 2, "memory_mb": 512, "timeout_ms": 30000, "priority": -2})
        );
        // Nothing asked: no `resources` on the wire, as before.
        let plain = Resources::of(&task.policy);
        assert!(plain.is_empty());
        let start = ToWorker::Start { binary: "b".into(), msg: ToNode::Cancel { attempt_id: 1 }, resources: plain };
        let text = serde_json::to_string(&start).unwrap();
        assert_eq!(text, r#"{"type":"start","binary":"b","msg":{"type":"cancel","attempt_id":1}}"#);
        assert!(
            matches!(serde_json::from_str::<ToWorker>(&text).unwrap(), ToWorker::Start { resources, .. } if resources.is_empty())
        );
    }
}
