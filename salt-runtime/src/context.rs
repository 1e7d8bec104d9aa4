//! What a running task sees: its [`Context`], typed [`Handle`]s to the nodes it spawned, and
//! [`Arg`]s that are either values or handles.
//!
//! Inside a run, calling a task spawns a child node at once (key `(parent, seq)`) and returns a
//! handle; awaiting the handle asks the orchestrator for the child's output. Outside any run (a
//! plain unit test), awaiting the handle runs the task body directly.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{NodeId, RunId};

tokio::task_local! {
    static CURRENT: Context;
}

/// A value a task takes and gives: serde both ways, with a JSON Schema.
///
/// Implemented for every type that is `Serialize + DeserializeOwned + JsonSchema + Send + 'static`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a task boundary",
    label = "task inputs and outputs must be serde (de)serializable and have a JSON Schema",
    note = "add `#[derive(Serialize, Deserialize, JsonSchema)]` to the type (all three are in `salt::prelude`)"
)]
pub trait TaskValue: Serialize + DeserializeOwned + schemars::JsonSchema + Send + 'static {}

// Not recommended: a type that misses a derive is reported as not being a `TaskValue`, with the
// hint above, rather than once for each trait it misses.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + schemars::JsonSchema + Send + 'static> TaskValue for T {}

pub use salt_core::call::{
    Annotation, JournalKind, Mutation, PromiseScope, SLEEP_SIGNAL, SignalWait, SpawnRequest, WireArg,
};

/// Answers to many awaits of one body, gathered so that the body wakes once for all of them
/// ([`join_all`]).
pub(crate) struct Gather<T> {
    slots: Mutex<Vec<Option<T>>>,
    left: std::sync::atomic::AtomicUsize,
    done: Mutex<Option<futures::channel::oneshot::Sender<()>>>,
}

impl<T> Gather<T> {
    /// A gathering of `n` answers, and what resolves once all are in.
    pub(crate) fn new(n: usize) -> (Arc<Self>, futures::channel::oneshot::Receiver<()>) {
        let (tx, rx) = futures::channel::oneshot::channel();
        let gather = Self {
            slots: Mutex::new((0..n).map(|_| None).collect()),
            left: std::sync::atomic::AtomicUsize::new(n),
            done: Mutex::new(Some(tx)),
        };
        if n == 0 {
            gather.finish();
        }
        (Arc::new(gather), rx)
    }

    /// The answer of await number `i`.
    pub(crate) fn put(&self, i: usize, answer: T) {
        let fresh = match self.slots.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i) {
            Some(slot) if slot.is_none() => {
                *slot = Some(answer);
                true
            }
            _ => false,
        };
        if fresh && self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        if let Some(tx) = self.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }

    /// The answers, in order (once all are in; a missing one is `None`).
    pub(crate) fn take(&self) -> Vec<Option<T>> {
        std::mem::take(&mut *self.slots.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// An await that got no answer (never expected: answers come before the gathering ends).
pub(crate) fn unanswered() -> Error {
    Error::new(ErrorKind::Protocol, "an await got no answer")
}

/// The orchestrator as a running body sees it (in process, or across the stdio protocol).
pub(crate) trait Host: Send + Sync + 'static {
    fn mutate(&self, mutations: Vec<Mutation>);
    fn await_node(&self, seq: u32) -> BoxFuture<'static, std::result::Result<Value, Error>>;
    /// Awaits several children at once; the body wakes once, when all have answered.
    fn await_nodes(&self, seqs: Vec<u32>) -> BoxFuture<'static, Vec<std::result::Result<Value, Error>>> {
        futures::future::join_all(seqs.into_iter().map(|s| self.await_node(s))).boxed()
    }
    fn journal(&self, seq: u32, kind: JournalKind, proposed: Value) -> BoxFuture<'static, Value>;
    fn wait_signal(&self, wait: SignalWait) -> BoxFuture<'static, Value>;
    fn log(&self, line: String);
}

struct ContextInner {
    host: Option<Arc<dyn Host>>,
    run: RunId,
    node: NodeId,
    attempt: u32,
    seq: AtomicU32,
    pending: Mutex<Vec<Mutation>>,
    /// Children whose results the body observed since its last spawn, by sequence number.
    observed: Mutex<Vec<u32>>,
}

/// A running node's view of its run. Take `ctx: &salt::Context` as a task parameter to get it.
///
/// It is not an input of the task: callers do not pass it. Outside a run (a plain unit test),
/// the body gets a detached context: task calls run their bodies directly, and `random` and `now`
/// are not journaled.
///
/// ```
/// use salt::prelude::*;
///
/// /// Picks one of the sources, the same one if the node is replayed.
/// #[task]
/// async fn pick_source(sources: Vec<String>, ctx: &Context) -> salt::Result<String> {
///     let i = ctx.random_below(sources.len() as u64).await as usize;
///     ctx.log(format!("attempt {} picked {}", ctx.attempt(), sources[i]));
///     Ok(sources[i].clone())
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// // Outside a run, awaiting the call runs the body with a detached context.
/// let picked = pick_source(vec!["a.csv".to_string(), "b.csv".to_string()]).await?;
/// assert!(picked == "a.csv" || picked == "b.csv");
/// assert!(!salt::Context::detached().in_run());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("run", &self.inner.run)
            .field("node", &self.inner.node)
            .field("attempt", &self.inner.attempt)
            .finish()
    }
}

impl Context {
    pub(crate) fn new(host: Arc<dyn Host>, run: RunId, node: NodeId, attempt: u32) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                host: Some(host),
                run,
                node,
                attempt,
                seq: AtomicU32::new(0),
                pending: Mutex::new(Vec::new()),
                observed: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A context outside any run: task calls run their bodies directly, `random` and `now` are
    /// not journaled. This is what a task sees when it is called from a plain unit test.
    pub fn detached() -> Self {
        Self {
            inner: Arc::new(ContextInner {
                host: None,
                run: RunId::new(0),
                node: NodeId::ROOT,
                attempt: 1,
                seq: AtomicU32::new(0),
                pending: Mutex::new(Vec::new()),
                observed: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The context of the node whose body makes a task call now, if any.
    ///
    /// Inside a body's own future, that body's context. Inside a future the body did not poll
    /// itself (one it handed to `tokio::spawn`, say), the context of the only body running in
    /// this process (on this thread, for a current-thread runtime): the call is that body's,
    /// and becomes one of its nodes like any other. When several bodies run, there is no such
    /// context, and a task call made there fails (see [`hooks::direct`]) rather than run
    /// outside the graph.
    pub fn current() -> Option<Context> {
        match CURRENT.try_with(|c| c.clone()) {
            Ok(c) => Some(c).filter(|c| c.inner.host.is_some()),
            Err(_) => match live::caller() {
                live::Caller::Body(c) => Some(c),
                live::Caller::Unknown(_) | live::Caller::None => None,
            },
        }
    }

    /// The context of the body whose own future is being polled, if any (unlike
    /// [`Context::current`], never that of a body that merely runs alongside).
    pub(crate) fn in_body() -> Option<Context> {
        CURRENT.try_with(|c| c.clone()).ok()
    }

    /// Runs `fut` as the body of this context: its context is the current one, the mutations
    /// it buffers are sent whenever it yields (so a body that broke a promise is stopped at
    /// its next `.await` that does not complete at once), and, while it runs, task calls from
    /// futures it spawned find their way back to it (see [`Context::current`]).
    pub(crate) fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        let mut body = Box::pin(CURRENT.scope(self.clone(), fut));
        let mut registered: Option<live::Registered> = None;
        std::future::poll_fn(move |cx| {
            if registered.is_none() {
                registered = Some(live::register(&self));
            }
            match body.as_mut().poll(cx) {
                std::task::Poll::Pending => {
                    self.flush();
                    std::task::Poll::Pending
                }
                ready => {
                    registered = None;
                    ready
                }
            }
        })
    }

    /// The id of the run (0 outside a run).
    pub fn run_id(&self) -> RunId {
        self.inner.run
    }

    /// The id of this node in its run (0 is the workflow's root node).
    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// Which attempt of this node is running, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Whether this body runs inside a run (false in a plain unit test).
    pub fn in_run(&self) -> bool {
        self.inner.host.is_some()
    }

    fn next_seq(&self) -> u32 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes that the body has the result of its child `seq`: what it spawns next runs after it.
    fn observe(&self, seqs: impl IntoIterator<Item = u32>) {
        self.inner.observed.lock().unwrap_or_else(|p| p.into_inner()).extend(seqs);
    }

    fn push(&self, mutation: Mutation) {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).push(mutation);
    }

    /// Sends the buffered mutations to the orchestrator.
    pub(crate) fn flush(&self) {
        let Some(host) = &self.inner.host else { return };
        let batch = std::mem::take(&mut *self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            host.mutate(batch);
        }
    }

    fn host(&self) -> Option<&Arc<dyn Host>> {
        self.flush();
        self.inner.host.as_ref()
    }

    /// Adds a control edge: `to` runs after `from` (both spawned by this body). `to` must not
    /// have started, and the edge must not close a cycle; otherwise this node fails with an error
    /// naming both nodes.
    pub fn edge<A, B>(&self, from: &Handle<A>, to: &Handle<B>) {
        if let (Some(from), Some(to)) = (from.seq(), to.seq()) {
            self.push(Mutation::Edge { from, to });
        }
    }

    /// Promises how this node's subtree (what it spawns, transitively) may still change, e.g.
    /// `"no new nodes"`, `"only tasks parse, load"`, `"A -> M* -> B"`. The orchestrator checks every
    /// later mutation against it; a run that breaks it is terminated. A promise that does not
    /// parse is an error here.
    pub fn promise(&self, promise: &str) -> Result<()> {
        self.promise_in(promise, PromiseScope::Subtree)
    }

    /// Like [`Context::promise`], over the whole run.
    pub fn promise_run(&self, promise: &str) -> Result<()> {
        self.promise_in(promise, PromiseScope::Run)
    }

    fn promise_in(&self, text: &str, scope: PromiseScope) -> Result<()> {
        let parsed: crate::promise::Promise =
            text.parse().map_err(|e| Error::new(ErrorKind::Usage, format!("bad promise: {e}")))?;
        if self.inner.host.is_some() {
            let seq = self.next_seq();
            self.push(Mutation::Promise { seq, text: parsed.to_string(), scope });
        }
        Ok(())
    }

    /// Sets cosmetic attributes (label, color, shape) of this node.
    pub fn annotate(&self, annotation: Annotation) {
        if self.inner.host.is_some() {
            self.push(Mutation::Annotate { child: None, annotation });
        }
    }

    /// Labels the edge from `from` to `to` (both spawned by this body), whatever its kind: a data
    /// edge (`to` takes `from`'s handle), a control edge ([`Context::edge`]) or a runs-after edge.
    /// Cosmetic: `graph` draws it on the edge. Nothing happens when there is no such edge.
    pub fn edge_label<A, B>(&self, from: &Handle<A>, to: &Handle<B>, label: impl Into<String>) {
        if let (Some(from), Some(to)) = (from.seq(), to.seq()) {
            self.push(Mutation::EdgeLabel { from, to, label: label.into() });
        }
    }

    /// Sets cosmetic attributes of a node this body spawned.
    pub fn annotate_child<T>(&self, child: &Handle<T>, annotation: Annotation) {
        if let Some(seq) = child.seq() {
            self.push(Mutation::Annotate { child: Some(seq), annotation });
        }
    }

    /// Waits for the signal `name` (sent with `signal RUN NAME JSON`) and returns its value.
    /// While it waits the node holds no process and no slot: it is parked, and replayed up to
    /// here when the signal arrives. Outside a run this is an error.
    pub async fn wait_for<T: TaskValue>(&self, name: &str) -> Result<T> {
        self.wait(name, None, None).await
    }

    /// Like [`Context::wait_for`], but gives up after `timeout` and returns `default`.
    pub async fn wait_for_or<T: TaskValue>(&self, name: &str, timeout: Duration, default: T) -> Result<T> {
        let default = serde_json::to_value(&default)
            .map_err(|e| Error::new(ErrorKind::Input, format!("cannot encode the default of signal `{name}`: {e}")))?;
        self.wait(name, Some(timeout), Some(default)).await
    }

    /// Sleeps durably: the node is parked (no process, no slot) and replayed up to here when
    /// the time is up, even across a `recover` after the orchestrator stopped. Outside a run, an
    /// ordinary sleep.
    pub async fn sleep(&self, duration: Duration) {
        if self.inner.host.is_none() {
            return tokio::time::sleep(duration).await;
        }
        let _: Result<()> = self.wait(SLEEP_SIGNAL, Some(duration), Some(Value::Null)).await;
    }

    async fn wait<T: TaskValue>(&self, name: &str, timeout: Option<Duration>, default: Option<Value>) -> Result<T> {
        let Some(host) = self.host() else {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("`wait_for(\"{name}\")` outside a run: nobody can send the signal"),
            ));
        };
        let schema =
            crate::registry::with_integer_bounds(serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default());
        let wait = SignalWait {
            seq: self.next_seq(),
            name: name.to_string(),
            schema,
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            default,
        };
        let value = host.wait_signal(wait).await;
        serde_json::from_value(value)
            .map_err(|e| Error::new(ErrorKind::Input, format!("signal `{name}` does not match its type: {e}")))
    }

    /// A random number, journaled: a replay of this body gets the same value back.
    pub async fn random(&self) -> u64 {
        let proposed = random_u64();
        match self.host() {
            None => proposed,
            Some(host) => {
                let v = host.journal(self.next_seq(), JournalKind::Random, Value::from(proposed)).await;
                v.as_u64().unwrap_or(proposed)
            }
        }
    }

    /// A random number in `0..bound` (journaled, see [`Context::random`]); 0 when `bound` is 0.
    pub async fn random_below(&self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.random().await % bound }
    }

    /// The wall-clock time, journaled: a replay of this body gets the same time back.
    pub async fn now(&self) -> SystemTime {
        let proposed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let millis = match self.host() {
            None => proposed,
            Some(host) => host
                .journal(self.next_seq(), JournalKind::Now, Value::from(proposed))
                .await
                .as_u64()
                .unwrap_or(proposed),
        };
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    /// Writes a line to this attempt's log (`salt logs RUN NODE`).
    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        match &self.inner.host {
            Some(host) => host.log(line),
            None => tracing::info!(target: "salt::task", "{line}"),
        }
    }

    /// Spawns a child node of task `task` with these arguments and returns its handle.
    fn spawn<T: TaskValue>(&self, task: &'static str, args: Vec<Result<(String, WireArg)>>) -> Handle<T> {
        let args = match args.into_iter().collect::<Result<Vec<_>>>() {
            Ok(args) => args,
            Err(e) => return Handle::direct(async move { Err(e) }),
        };
        let seq = self.next_seq();
        let after = std::mem::take(&mut *self.inner.observed.lock().unwrap_or_else(|p| p.into_inner()));
        self.push(Mutation::Spawn(SpawnRequest { seq, task: task.to_string(), args, after, policy: None }));
        Handle::node(self.clone(), seq)
    }

    /// Spawns a child node of task `task` whose call changes its policy, returns its handle, and
    /// annotates it (label, color) when `annotation` sets anything. A built-in step
    /// ([`crate::command`]) spawns this way.
    pub(crate) fn spawn_with<T: TaskValue>(
        &self,
        task: &'static str,
        args: Vec<Result<(String, WireArg)>>,
        policy: crate::registry::PolicyOverride,
        annotation: Annotation,
    ) -> Handle<T> {
        let args = match args.into_iter().collect::<Result<Vec<_>>>() {
            Ok(args) => args,
            Err(e) => return Handle::direct(async move { Err(e) }),
        };
        let seq = self.next_seq();
        let after = std::mem::take(&mut *self.inner.observed.lock().unwrap_or_else(|p| p.into_inner()));
        let policy = Some(policy).filter(|p| !p.is_empty());
        self.push(Mutation::Spawn(SpawnRequest { seq, task: task.to_string(), args, after, policy }));
        if annotation != Annotation::default() {
            self.push(Mutation::Annotate { child: Some(seq), annotation });
        }
        Handle::node(self.clone(), seq)
    }
}

/// 64 random bits from the OS-seeded hasher of the standard library.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

type DirectFuture = Shared<BoxFuture<'static, std::result::Result<Value, Error>>>;

enum HandleInner {
    /// A child node of a running body.
    Node { ctx: Context, seq: u32 },
    /// Outside a run: the body itself, run (once) when first awaited.
    Direct(DirectFuture),
}

/// A typed reference to a node's future output. Await it for the value, or pass it as an
/// argument to another task call to wire the two nodes with a data edge.
///
/// A task call returns a handle. Inside a run, the call spawns the node at once, and the handle
/// can be awaited, cloned, or passed on without awaiting it, which makes the graph known before
/// the nodes run:
///
/// ```
/// use salt::prelude::*;
///
/// /// Squares a number.
/// #[task]
/// async fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// /// Adds two numbers.
/// #[task]
/// async fn plus(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// /// `x² + x²`: one `square` node, wired twice into `plus`.
/// #[workflow]
/// async fn twice_square(x: u64) -> salt::Result<u64> {
///     let sq: salt::Handle<u64> = square(x); // spawned now, not awaited
///     plus(sq.clone(), sq).await // two data edges from `square` to `plus`
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// let db = tempfile::tempdir()?;
/// let outcome = salt::Runner::new(db.path().join("salt.db")).run("twice_square", serde_json::json!({"x": 3})).await?;
/// assert_eq!(outcome.output, Some(serde_json::json!(18)));
///
/// // Outside a run, awaiting a handle runs the body directly.
/// assert_eq!(square(4).await?, 16);
/// # Ok(()) }
/// ```
pub struct Handle<T> {
    inner: Arc<HandleInner>,
    _out: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _out: PhantomData }
    }
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            HandleInner::Node { ctx, seq } => {
                write!(f, "Handle(node {} seq {})", ctx.node_id(), seq)
            }
            HandleInner::Direct(_) => f.write_str("Handle(direct)"),
        }
    }
}

impl<T> Handle<T> {
    fn seq(&self) -> Option<u32> {
        match &*self.inner {
            HandleInner::Node { seq, .. } => Some(*seq),
            HandleInner::Direct(_) => None,
        }
    }
}

impl<T: TaskValue> Handle<T> {
    fn node(ctx: Context, seq: u32) -> Self {
        Self { inner: Arc::new(HandleInner::Node { ctx, seq }), _out: PhantomData }
    }

    /// A handle whose body runs directly when awaited (outside any run).
    fn direct<F>(body: F) -> Self
    where
        F: Future<Output = Result<T>> + Send + 'static,
    {
        // A body run directly is outside any run: calls it makes run directly too.
        let fut = CURRENT
            .scope(Context::detached(), async move {
                let out = body.await?;
                serde_json::to_value(out).map_err(|e| Error::new(ErrorKind::Input, e))
            })
            .boxed()
            .shared();
        Self { inner: Arc::new(HandleInner::Direct(fut)), _out: PhantomData }
    }

    async fn value(self) -> Result<Value> {
        self.inner.value().await
    }

    fn wire(&self, name: &str) -> Result<WireArg> {
        self.inner.wire(name)
    }
}

impl<T> Handle<T> {
    /// The same handle, typed as the value it is read as when passed to a task: `T` read as
    /// `Option<T>` is `Some`.
    fn retype<U>(self) -> Handle<U> {
        Handle { inner: self.inner, _out: PhantomData }
    }
}

impl HandleInner {
    /// The node's output (or the direct body's), as JSON.
    async fn value(&self) -> Result<Value> {
        match self {
            HandleInner::Node { ctx, seq } => match ctx.host() {
                Some(host) => {
                    let value = host.await_node(*seq).await?;
                    ctx.observe([*seq]);
                    Ok(value)
                }
                None => Err(Error::new(ErrorKind::Usage, "a node handle awaited outside its run")),
            },
            HandleInner::Direct(fut) => Ok(fut.clone().await?),
        }
    }

    /// The handle as an argument `name` of a spawn request.
    fn wire(&self, name: &str) -> Result<WireArg> {
        match self {
            HandleInner::Node { seq, .. } => Ok(WireArg::Handle(*seq)),
            HandleInner::Direct(_) => Err(Error::new(
                ErrorKind::Usage,
                format!("argument `{name}` is a handle made outside this run; await it and pass its value"),
            )),
        }
    }
}

impl<T: TaskValue> IntoFuture for Handle<T> {
    type Output = Result<T>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let value = self.value().await?;
            serde_json::from_value(value)
                .map_err(|e| Error::new(ErrorKind::Input, format!("cannot decode a node's output: {e}")))
        })
    }
}

/// An argument of a task call: a value, a handle to another node's output, or several handles
/// gathered into one list.
///
/// A task's public function takes `impl Into<Arg<T>>` for a parameter of type `T`, so a call
/// accepts:
///
/// | parameter type | what a call may pass |
/// |---|---|
/// | `T` | a `T`, a `Handle<T>` or a `&Handle<T>` |
/// | `Vec<T>` | also a `Vec<Handle<T>>`, a `&Vec<Handle<T>>`, a `&[Handle<T>]` or a `[Handle<T>; N]` |
/// | `[T; N]` | also a `[Handle<T>; N]` |
/// | `Option<T>` | also an `Option<Handle<T>>` (`None` is a plain `null`) |
/// | `(A, B)`, `(A, B, C)`, `(A, B, C, D)` | also a tuple of handles `(Handle<A>, Handle<B>, …)` |
///
/// Inside a run, every handle passed is a data edge from its node to the new one, which waits
/// for all of them and takes their outputs in order. Outside a run, the handles are awaited and
/// their values passed.
///
/// A literal `None` (or `vec![]`) passed where a handle could be passed too does not say which
/// one it is: write `None::<T>` (or `Vec::<T>::new()`).
///
/// ```
/// use salt::prelude::*;
///
/// /// Cubes a number.
/// #[task]
/// async fn cube(x: u64) -> u64 {
///     x * x * x
/// }
///
/// /// Sums numbers.
/// #[task]
/// async fn sum_all(xs: Vec<u64>) -> u64 {
///     xs.iter().sum()
/// }
///
/// /// `1³ + 2³ + 3³`: three `cube` nodes, each wired into `sum_all` by a data edge.
/// #[workflow]
/// async fn sum_of_cubes() -> salt::Result<u64> {
///     let cubes: Vec<salt::Handle<u64>> = (1..=3).map(cube).collect();
///     sum_all(cubes).await
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// let db = tempfile::tempdir()?;
/// let outcome = salt::Runner::new(db.path().join("salt.db")).run("sum_of_cubes", serde_json::json!({})).await?;
/// assert_eq!(outcome.output, Some(serde_json::json!(36)));
///
/// // Outside a run, the handles are awaited and their values passed.
/// assert_eq!(sum_all([cube(2), cube(3)]).await?, 35);
/// # Ok(()) }
/// ```
pub enum Arg<T> {
    /// A value known now.
    Value(T),
    /// The output of another node, once it has one.
    Handle(Handle<T>),
    /// The outputs of several nodes, in order, as one list.
    Handles(Handles<T>),
}

/// The handles of several nodes passed as one argument of type `T`, a `Vec`, an array or a
/// tuple: the new node takes the list of their outputs, in order. Made by the conversions into
/// [`Arg`].
pub struct Handles<T> {
    members: Vec<Arc<HandleInner>>,
    _out: PhantomData<fn() -> T>,
}

impl<T> Handles<T> {
    fn new<U>(handles: impl IntoIterator<Item = Handle<U>>) -> Self {
        Self { members: handles.into_iter().map(|h| h.inner).collect(), _out: PhantomData }
    }
}

impl<T> std::fmt::Debug for Handles<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handles({} members)", self.members.len())
    }
}

impl<T> From<T> for Arg<T> {
    fn from(value: T) -> Self {
        Arg::Value(value)
    }
}

impl<T> From<Handle<T>> for Arg<T> {
    fn from(handle: Handle<T>) -> Self {
        Arg::Handle(handle)
    }
}

impl<T> From<&Handle<T>> for Arg<T> {
    fn from(handle: &Handle<T>) -> Self {
        Arg::Handle(handle.clone())
    }
}

impl From<&str> for Arg<String> {
    fn from(value: &str) -> Self {
        Arg::Value(value.to_owned())
    }
}

impl<T> From<Vec<Handle<T>>> for Arg<Vec<T>> {
    fn from(handles: Vec<Handle<T>>) -> Self {
        Arg::Handles(Handles::new(handles))
    }
}

impl<T> From<&Vec<Handle<T>>> for Arg<Vec<T>> {
    fn from(handles: &Vec<Handle<T>>) -> Self {
        Arg::Handles(Handles::new(handles.iter().cloned()))
    }
}

impl<T> From<&[Handle<T>]> for Arg<Vec<T>> {
    fn from(handles: &[Handle<T>]) -> Self {
        Arg::Handles(Handles::new(handles.iter().cloned()))
    }
}

impl<T, const N: usize> From<[Handle<T>; N]> for Arg<Vec<T>> {
    fn from(handles: [Handle<T>; N]) -> Self {
        Arg::Handles(Handles::new(handles))
    }
}

impl<T> From<Option<Handle<T>>> for Arg<Option<T>> {
    fn from(handle: Option<Handle<T>>) -> Self {
        match handle {
            Some(h) => Arg::Handle(h.retype()),
            None => Arg::Value(None),
        }
    }
}

/// `From<(Handle<A>, Handle<B>, …)> for Arg<(A, B, …)>`.
macro_rules! tuple_of_handles {
    ($($t:ident $v:ident),+) => {
        impl<$($t),+> From<($(Handle<$t>,)+)> for Arg<($($t,)+)> {
            fn from(($($v,)+): ($(Handle<$t>,)+)) -> Self {
                Arg::Handles(Handles { members: vec![$($v.inner),+], _out: PhantomData })
            }
        }
    };
}
tuple_of_handles!(A a, B b);
tuple_of_handles!(A a, B b, C c);
tuple_of_handles!(A a, B b, C c, D d);

impl<T, const N: usize> From<[Handle<T>; N]> for Arg<[T; N]> {
    fn from(handles: [Handle<T>; N]) -> Self {
        Arg::Handles(Handles::new(handles))
    }
}

impl<T: TaskValue> Arg<T> {
    /// The argument as sent in a spawn request.
    fn wire(self, name: &str) -> Result<(String, WireArg)> {
        let arg = match self {
            Arg::Value(v) => WireArg::Value(
                serde_json::to_value(v)
                    .map_err(|e| Error::new(ErrorKind::Input, format!("cannot encode argument `{name}`: {e}")))?,
            ),
            Arg::Handle(h) => h.wire(name)?,
            Arg::Handles(hs) => WireArg::List(hs.members.iter().map(|h| h.wire(name)).collect::<Result<_>>()?),
        };
        Ok((name.to_owned(), arg))
    }

    /// The value, awaiting the handles if there are any (outside a run).
    async fn resolve(self) -> Result<T> {
        match self {
            Arg::Value(v) => Ok(v),
            Arg::Handle(h) => h.await,
            Arg::Handles(hs) => {
                let values = futures::future::try_join_all(hs.members.iter().map(|h| h.value())).await?;
                serde_json::from_value(Value::Array(values))
                    .map_err(|e| Error::new(ErrorKind::Input, format!("cannot decode a list of node outputs: {e}")))
            }
        }
    }
}

/// Awaits every handle, in order; fails with the first error.
///
/// Inside a run, the nodes behind the handles run in parallel (up to the run's parallelism).
///
/// ```
/// use salt::prelude::*;
///
/// /// Counts the words of one text.
/// #[task]
/// async fn count_words(text: String) -> usize {
///     text.split_whitespace().count()
/// }
///
/// /// Counts the words of every text, one node per text.
/// #[workflow]
/// async fn word_counts(texts: Vec<String>) -> salt::Result<Vec<usize>> {
///     salt::join_all(texts.into_iter().map(count_words)).await
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// let db = tempfile::tempdir()?;
/// let input = serde_json::json!({"texts": ["one two", "three", ""]});
/// let outcome = salt::Runner::new(db.path().join("salt.db")).run("word_counts", input).await?;
/// assert_eq!(outcome.output, Some(serde_json::json!([2, 1, 0])));
/// # Ok(()) }
/// ```
pub async fn join_all<T, I>(handles: I) -> Result<Vec<T>>
where
    T: TaskValue,
    I: IntoIterator<Item = Handle<T>>,
{
    let handles: Vec<Handle<T>> = handles.into_iter().collect();
    // Children of one running body: one request for all, one wake-up when all have answered.
    let mut ctx: Option<&Context> = None;
    let mut seqs = Vec::with_capacity(handles.len());
    for h in &handles {
        match &*h.inner {
            HandleInner::Node { ctx: c, seq } if ctx.is_none_or(|first| Arc::ptr_eq(&first.inner, &c.inner)) => {
                ctx = Some(c);
                seqs.push(*seq);
            }
            _ => break,
        }
    }
    if let Some(host) = ctx.filter(|_| seqs.len() == handles.len()).and_then(|c| c.host()) {
        let answers = host.await_nodes(seqs.clone()).await;
        if let Some(c) = ctx {
            c.observe(seqs.iter().zip(&answers).filter(|(_, a)| a.is_ok()).map(|(s, _)| *s));
        }
        return answers
            .into_iter()
            .map(|a| {
                let value = a?;
                serde_json::from_value(value)
                    .map_err(|e| Error::new(ErrorKind::Input, format!("cannot decode a node's output: {e}")))
            })
            .collect();
    }
    futures::future::join_all(handles.into_iter().map(IntoFuture::into_future)).await.into_iter().collect()
}

/// The bodies running in this process, to find the caller of a task call made from a future
/// that is no body's own (one a body handed to `tokio::spawn`).
pub(crate) mod live {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, Weak};
    use std::thread::ThreadId;

    use super::{Context, ContextInner};
    use crate::error::{Error, ErrorKind};

    struct Body {
        id: u64,
        ctx: Weak<ContextInner>,
        /// The thread of its current-thread runtime; none on a multi-thread runtime.
        thread: Option<ThreadId>,
    }

    static BODIES: Mutex<Vec<Body>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    /// Executors (and node processes, workers) that run bodies in this process now, by id, with
    /// the thread of their current-thread runtime (none: a multi-thread runtime).
    static HOSTS: Mutex<Vec<(u64, Option<ThreadId>)>> = Mutex::new(Vec::new());

    fn bodies() -> std::sync::MutexGuard<'static, Vec<Body>> {
        BODIES.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The thread that identifies the runtime polling now, for a current-thread runtime.
    fn runtime_thread() -> Option<ThreadId> {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => None,
            _ => Some(std::thread::current().id()),
        }
    }

    /// A body registered while it runs; dropping it unregisters the body.
    pub(crate) struct Registered(u64);

    impl Drop for Registered {
        fn drop(&mut self) {
            bodies().retain(|b| b.id != self.0);
        }
    }

    pub(crate) fn register(ctx: &Context) -> Registered {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        if ctx.inner.host.is_some() {
            let body = Body { id, ctx: std::sync::Arc::downgrade(&ctx.inner), thread: runtime_thread() };
            bodies().push(body);
        }
        Registered(id)
    }

    fn hosts() -> std::sync::MutexGuard<'static, Vec<(u64, Option<ThreadId>)>> {
        HOSTS.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This runtime runs bodies while the value lives (an executor, a node process, a worker).
    pub(crate) struct Hosting(u64);

    impl Hosting {
        /// Made on the runtime that runs the bodies.
        pub(crate) fn new() -> Self {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            hosts().push((id, runtime_thread()));
            Self(id)
        }
    }

    impl Drop for Hosting {
        fn drop(&mut self) {
            hosts().retain(|h| h.0 != self.0);
        }
    }

    /// Who makes a task call from a future that is no body's own.
    pub(crate) enum Caller {
        /// The only body running here.
        Body(Context),
        /// Bodies run here, but which one calls cannot be told: the call must fail.
        Unknown(Error),
        /// Nothing runs here: a call outside any run.
        None,
    }

    pub(crate) fn caller() -> Caller {
        let thread = runtime_thread();
        let here: Vec<Context> = bodies()
            .iter()
            .filter(|b| b.thread == thread)
            .filter_map(|b| b.ctx.upgrade().map(|inner| Context { inner }))
            .collect();
        match here.len() {
            1 => Caller::Body(here.into_iter().next().expect("one body")),
            0 if !hosts().iter().any(|h| h.1 == thread) => Caller::None,
            0 => Caller::Unknown(Error::new(
                ErrorKind::Usage,
                "a task was called from a future that belongs to no running body (one left running \
                 by `tokio::spawn` after its body ended?); task calls are made by a body, or by a \
                 future it spawned while it runs",
            )),
            n => Caller::Unknown(Error::new(
                ErrorKind::Usage,
                format!(
                    "a task was called from a future that is not a body's own (inside `tokio::spawn`?) \
                     while {n} bodies run in this process, so it cannot be told which node calls it; \
                     call the task in the body and move its handle into the future, or await the \
                     future in the body"
                ),
            )),
        }
    }
}

/// What the code `#[task]` and `#[workflow]` generate calls. Not a public API: the `salt`
/// facade re-exports it under `salt::__private`.
#[doc(hidden)]
pub mod hooks {
    use std::future::Future;

    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::{Arg, Context, Handle, TaskValue, WireArg};
    use crate::error::{Error, ErrorKind, Result};

    /// Spawns a child node of task `task` from the body `ctx` runs, with these arguments, and
    /// returns its handle. An argument that could not be encoded fails the handle instead.
    pub fn spawn<T: TaskValue>(ctx: &Context, task: &'static str, args: Vec<Result<(String, WireArg)>>) -> Handle<T> {
        ctx.spawn(task, args)
    }

    /// A handle whose body runs directly when awaited (a task called outside any run).
    ///
    /// A call from a future that is no body's own, made while bodies run in this process but
    /// none of them can be told to be its caller (see [`Context::current`]), does not run: the
    /// handle fails with an error of kind `usage` that says why. Work done there would be
    /// outside the graph and past every promise.
    pub fn direct<T: TaskValue>(body: impl Future<Output = Result<T>> + Send + 'static) -> Handle<T> {
        if super::CURRENT.try_with(|_| ()).is_err()
            && let super::live::Caller::Unknown(e) = super::live::caller()
        {
            return Handle::direct(async move { Err(e) });
        }
        Handle::direct(body)
    }

    /// The argument `name` as sent in a spawn request.
    pub fn wire<T: TaskValue>(arg: Arg<T>, name: &str) -> Result<(String, WireArg)> {
        arg.wire(name)
    }

    /// The value of an argument, awaiting the handle if it is one (outside a run).
    pub async fn resolve<T: TaskValue>(arg: Arg<T>) -> Result<T> {
        arg.resolve().await
    }

    /// Decodes a task's input object.
    pub fn decode_input<T: DeserializeOwned>(task: &str, input: Value) -> Result<T> {
        serde_json::from_value(input)
            .map_err(|e| Error::new(ErrorKind::Input, format!("input of `{task}` does not match its type: {e}")))
    }

    /// Encodes a task's output.
    pub fn encode_output<T: Serialize>(task: &str, output: &T) -> Result<Value> {
        serde_json::to_value(output)
            .map_err(|e| Error::new(ErrorKind::Input, format!("output of `{task}` cannot be encoded: {e}")))
    }
}
