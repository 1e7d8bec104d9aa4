//! The `inline` executor: bodies run as tasks on this process's async runtime.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Answer, AttemptId, Event, Events, Executor, Launch};
use crate::context::{Context, Gather, Host, JournalKind, Mutation, SignalWait};
use crate::error::Error;
use crate::protocol::panic_error;

/// A call of a body waiting for its answer.
enum Waiting {
    /// Alone.
    One(oneshot::Sender<Answer>),
    /// Await number `.1` of a [`join_all`](crate::join_all).
    Part(Arc<Gather<Result<Value, Error>>>, usize),
}

/// Calls of one attempt waiting for their answers.
type Calls = Arc<Mutex<HashMap<u64, Waiting>>>;

struct Attempt {
    abort: tokio::task::AbortHandle,
    calls: Calls,
    /// The thread polling the body right now, 0 when none: a body blocked in a system call (it
    /// waits for a child process with `std::process::Command::status`, say) holds it.
    polling: Arc<AtomicI32>,
}

thread_local! {
    /// This thread's id, as `/proc/self/task` names it.
    static TID: i32 = nix::unistd::gettid().as_raw();
}

/// Says, while it is polled, which thread polls it.
fn tracked<F: Future>(body: F, polling: Arc<AtomicI32>) -> impl Future<Output = F::Output> {
    /// Clears the record when the poll ends, by return or by panic.
    struct Polled<'a>(&'a AtomicI32);
    impl Drop for Polled<'_> {
        fn drop(&mut self) {
            self.0.store(0, Ordering::Relaxed);
        }
    }
    let mut body = Box::pin(body);
    std::future::poll_fn(move |cx| {
        polling.store(TID.with(|t| *t), Ordering::Relaxed);
        let _polled = Polled(&polling);
        body.as_mut().poll(cx)
    })
}

/// Runs bodies on this process's runtime.
pub(crate) struct Inline {
    events: Events,
    /// Where the bodies of the tasks it runs are.
    registry: &'static crate::registry::Registry,
    attempts: HashMap<AttemptId, Attempt>,
    /// Made on the runtime of the first body started: see [`crate::context::live`].
    hosting: Option<crate::context::live::Hosting>,
}

impl Inline {
    pub(crate) fn new(events: Events, registry: &'static crate::registry::Registry) -> Self {
        Self { events, registry, attempts: HashMap::new(), hosting: None }
    }
}

impl Executor for Inline {
    fn start(&mut self, launch: Launch) {
        let Launch { at, task, input, .. } = launch;
        let Some(task) = self.registry.get(task.name) else {
            let e = crate::error::Error::new(
                crate::error::ErrorKind::Usage,
                format!("this binary has no body for task `{}`", task.name),
            );
            let _ = self.events.send(Event::Finished { at, result: Err(e) });
            return;
        };
        self.hosting.get_or_insert_with(crate::context::live::Hosting::new);
        let calls = Calls::default();
        let host =
            Arc::new(InlineHost { events: self.events.clone(), at, calls: calls.clone(), next: Default::default() });
        let ctx = Context::new(host, at.run, at.node, at.attempt);
        let polling = Arc::new(AtomicI32::new(0));
        let body = tracked(ctx.clone().scope(task.body(input, ctx.clone())), polling.clone());
        let events = self.events.clone();
        let handle = tokio::spawn(async move {
            let result = std::panic::AssertUnwindSafe(body).catch_unwind().await;
            ctx.flush();
            let result = match result {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(e)) => Err(e),
                Err(panic) => Err(panic_error(panic)),
            };
            let _ = events.send(Event::Finished { at, result });
        });
        self.attempts.insert(at, Attempt { abort: handle.abort_handle(), calls, polling });
    }

    fn answer(&mut self, at: AttemptId, call: u64, answer: Answer) {
        let Some(a) = self.attempts.get(&at) else { return };
        let waiting = a.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&call);
        match waiting {
            Some(Waiting::One(tx)) => {
                let _ = tx.send(answer);
            }
            Some(Waiting::Part(gather, i)) => gather.put(
                i,
                match answer {
                    Answer::Resolved(r) => r,
                    Answer::Value(v) => Ok(v),
                },
            ),
            None => {}
        }
    }

    fn stop(&mut self, at: AttemptId) {
        if let Some(a) = self.attempts.remove(&at) {
            let polling = a.polling.load(Ordering::Relaxed);
            a.abort.abort();
            // The processes a stopped body started stop with it. Inline bodies share this
            // process: when no other body runs, every process below it is the body's; else, a
            // body blocked on a thread (waiting for a child process) is told apart by the
            // thread, whose children are its own.
            if self.attempts.is_empty() {
                crate::protocol::kill_descendants();
            } else if polling != 0 {
                crate::protocol::kill_started_by_thread(polling);
            }
        }
    }

    fn ended(&mut self, at: AttemptId) {
        self.attempts.remove(&at);
    }

    fn shutdown(&mut self) {
        let stopped = !self.attempts.is_empty();
        for (_, a) in self.attempts.drain() {
            a.abort.abort();
        }
        if stopped {
            crate::protocol::kill_descendants();
        }
    }
}

struct InlineHost {
    events: Events,
    at: AttemptId,
    calls: Calls,
    next: std::sync::atomic::AtomicU64,
}

impl InlineHost {
    /// Registers a call and returns where its answer arrives.
    fn call(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Waiting::One(tx));
        (id, rx)
    }
}

/// The core's answer. If it never comes (the attempt is being stopped: cancelled, timed out,
/// parked), wait for that.
async fn answer(rx: oneshot::Receiver<Answer>) -> Answer {
    match rx.await {
        Ok(v) => v,
        Err(_) => futures::future::pending().await,
    }
}

async fn value(rx: oneshot::Receiver<Answer>) -> Value {
    match answer(rx).await {
        Answer::Value(v) => v,
        Answer::Resolved(_) => futures::future::pending().await,
    }
}

impl Host for InlineHost {
    fn mutate(&self, mutations: Vec<Mutation>) {
        let _ = self.events.send(Event::Mutate { at: self.at, mutations });
    }

    fn wait_signal(&self, wait: SignalWait) -> BoxFuture<'static, Value> {
        let (call, rx) = self.call();
        let _ = self.events.send(Event::Wait { at: self.at, call, wait });
        value(rx).boxed()
    }

    fn await_node(&self, seq: u32) -> BoxFuture<'static, Result<Value, Error>> {
        let (call, rx) = self.call();
        let _ = self.events.send(Event::Await { at: self.at, call, seq });
        async move {
            match answer(rx).await {
                Answer::Resolved(r) => r,
                Answer::Value(v) => Ok(v),
            }
        }
        .boxed()
    }

    fn await_nodes(&self, seqs: Vec<u32>) -> BoxFuture<'static, Vec<Result<Value, Error>>> {
        let (gather, all_in) = Gather::new(seqs.len());
        {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            for (i, seq) in seqs.into_iter().enumerate() {
                let call = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                calls.insert(call, Waiting::Part(gather.clone(), i));
                let _ = self.events.send(Event::Await { at: self.at, call, seq });
            }
        }
        async move {
            if all_in.await.is_err() {
                // Never answered: the attempt is being stopped.
                futures::future::pending::<()>().await;
            }
            gather.take().into_iter().map(|a| a.unwrap_or_else(|| Err(crate::context::unanswered()))).collect()
        }
        .boxed()
    }

    fn journal(&self, seq: u32, kind: JournalKind, value_: Value) -> BoxFuture<'static, Value> {
        let (call, rx) = self.call();
        let _ = self.events.send(Event::Journal { at: self.at, call, seq, kind, value: value_ });
        value(rx).boxed()
    }

    fn log(&self, line: String) {
        let _ = self.events.send(Event::Log { at: self.at, line });
    }
}
