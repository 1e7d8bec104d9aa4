//! The `process` and `pool` executors: attempts run in processes of this binary
//! (`<bin> __salt exec`), each in its own process group, over the stdio protocol.
//!
//! `process` starts a fresh process per attempt and kills its group when the attempt ends, so
//! nothing the attempt started outlives it. `pool` keeps processes alive and gives each one
//! attempt at a time: a process that breaks (panics its runtime, exits, prints garbage, sends a
//! message over the limit) fails only its own attempt and is replaced, and a stopped attempt
//! whose body does not stop within a grace period takes its process down with it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::session::{self, Attempts, End};
use super::{Answer, AttemptId, Events, Executor, Launch};
use crate::blob::{BlobRef, Blobs};
use crate::error::ProtocolError;
use crate::protocol::{Outcome, ToNode};

/// How long a stopped attempt's body has to stop before its process is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Which of the two process executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolMode {
    /// A fresh process per attempt.
    Process,
    /// Long-lived processes, at least this many kept warm.
    Pool { size: usize },
}

/// One node process.
struct Worker {
    pid: Option<i32>,
    outbox: mpsc::UnboundedSender<ToNode>,
    attempts: Arc<Attempts>,
    /// Running an attempt, or reserved for one.
    busy: AtomicBool,
    dead: AtomicBool,
}

impl Worker {
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Some(pid) = self.pid {
            // Command steps run in process groups of their own, below the node process.
            crate::protocol::kill_groups_below(pid);
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Runs attempts in processes of this binary.
pub(crate) struct Pool {
    mode: PoolMode,
    exe: PathBuf,
    /// Where values over [`SPILL_BYTES`](crate::blob::SPILL_BYTES) go, to be passed by reference; none: inline.
    blobs: Option<Blobs>,
    events: Events,
    workers: Vec<Arc<Worker>>,
    running: std::collections::HashMap<AttemptId, (Arc<Worker>, u64)>,
    next_id: u64,
}

impl Pool {
    pub(crate) fn new(mode: PoolMode, exe: PathBuf, blobs: Option<Blobs>, events: Events) -> Self {
        let mut pool = Self { mode, exe, blobs, events, workers: Vec::new(), running: Default::default(), next_id: 1 };
        if let PoolMode::Pool { size } = mode {
            for _ in 0..size {
                let w = pool.spawn_worker(None);
                pool.workers.push(w);
            }
        }
        pool
    }

    /// Starts a node process and its session tasks; `first` is an attempt it runs from the
    /// start (so that whatever ends the session also ends that attempt).
    fn spawn_worker(&self, first: Option<(u64, AttemptId)>) -> Arc<Worker> {
        let (outbox, inbox) = mpsc::unbounded_channel();

        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(["__salt", "exec"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn();
        let pid = child.as_ref().ok().and_then(|c| c.id()).and_then(|p| i32::try_from(p).ok());
        let worker = Arc::new(Worker {
            pid,
            outbox,
            attempts: Arc::default(),
            busy: AtomicBool::new(false),
            dead: AtomicBool::new(false),
        });
        if let Some((id, at)) = first {
            worker.busy.store(true, Ordering::SeqCst);
            worker.attempts.insert(id, at);
        }
        let events = self.events.clone();
        let exe = self.exe.clone();
        let blobs = self.blobs.clone();
        let w = worker.clone();
        let one_shot = self.mode == PoolMode::Process;
        tokio::spawn(async move {
            let mut child = match child {
                Ok(child) => child,
                Err(e) => {
                    w.dead.store(true, Ordering::SeqCst);
                    // Attempts may have been given to it already; they fail with the reason.
                    tokio::task::yield_now().await;
                    let error = ProtocolError::Io(format!("cannot start {}: {e}", exe.display()));
                    session::fail_all(&w.attempts, &events, &error);
                    return;
                }
            };
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                w.kill();
                session::fail_all(&w.attempts, &events, &ProtocolError::Io("node process has no stdio pipes".into()));
                return;
            };
            let writer = tokio::spawn(session::write_loop(stdin, inbox));
            let (ended_tx, ended_rx) = watch::channel(0u64);
            let logs = tokio::spawn(session::log_loop(stderr, w.attempts.clone(), events.clone(), ended_tx));
            let w2 = w.clone();
            let end = session::read_loop(stdout, w.attempts.clone(), blobs, events.clone(), ended_rx, move || {
                if one_shot {
                    // The attempt is over: so is its process, and whatever it started.
                    w2.kill();
                } else {
                    w2.busy.store(false, Ordering::SeqCst);
                }
            })
            .await;
            w.dead.store(true, Ordering::SeqCst);
            match end {
                End::Closed => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    w.kill();
                }
                End::Broken(mut error) => {
                    w.kill();
                    let status = child.wait().await;
                    if let ProtocolError::EarlyExit { status: s } = &mut error {
                        *s = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), logs).await;
                    session::fail_all(&w.attempts, &events, &error);
                }
            }
            writer.abort();
        });
        worker
    }

    /// An idle live worker with attempt `id` given to it, or a new one.
    fn worker(&mut self, id: u64, at: AttemptId) -> Arc<Worker> {
        if self.mode == PoolMode::Process {
            return self.spawn_worker(Some((id, at)));
        }
        self.workers.retain(|w| !w.dead.load(Ordering::SeqCst));
        if let Some(w) = self.workers.iter().find(|w| !w.busy.load(Ordering::SeqCst)) {
            w.busy.store(true, Ordering::SeqCst);
            w.attempts.insert(id, at);
            return w.clone();
        }
        let w = self.spawn_worker(Some((id, at)));
        self.workers.push(w.clone());
        w
    }
}

impl Pool {
    /// Stores a value over [`SPILL_BYTES`](crate::blob::SPILL_BYTES) as a blob, to pass it by reference. A blob already
    /// there (the node that made the value stored it) is only hashed, not written again. A
    /// value that cannot be stored travels inline.
    fn spill(&self, value: &serde_json::Value) -> Option<BlobRef> {
        let blobs = self.blobs.as_ref()?;
        blobs.spill(value).unwrap_or_else(|e| {
            tracing::warn!("a value is passed inline: {e}");
            None
        })
    }

    /// Takes the arguments over [`SPILL_BYTES`](crate::blob::SPILL_BYTES) out of an input object, as references.
    fn spill_input(&self, input: &mut serde_json::Value) -> std::collections::BTreeMap<String, BlobRef> {
        let mut by_ref = std::collections::BTreeMap::new();
        let (Some(_), serde_json::Value::Object(args)) = (&self.blobs, input) else { return by_ref };
        let large: Vec<(String, BlobRef)> =
            args.iter().filter_map(|(name, v)| Some((name.clone(), self.spill(v)?))).collect();
        for (name, r) in large {
            args.remove(&name);
            by_ref.insert(name, r);
        }
        by_ref
    }
}

impl Executor for Pool {
    fn start(&mut self, launch: Launch) {
        let Launch { at, task, mut input, .. } = launch;
        let id = self.next_id;
        self.next_id += 1;
        let input_blobs = self.spill_input(&mut input);
        let worker = self.worker(id, at);
        let start = ToNode::Start {
            attempt_id: id,
            run: at.run,
            node: at.node,
            task: task.name.to_string(),
            attempt: at.attempt,
            input,
            input_blobs,
            blobs: self.blobs.as_ref().map(|b| b.dir().display().to_string()),
        };
        // A fresh process had the attempt before its session began, so whatever ends the
        // session fails it. A pool process may have died just before it got the attempt.
        let lost = worker.outbox.send(start).is_err() || worker.dead.load(Ordering::SeqCst);
        if lost && self.mode != PoolMode::Process && worker.attempts.remove(id).is_some() {
            let error = ProtocolError::Io("the node process ended before the attempt could start".into());
            let _ = self.events.send(super::Event::Finished { at, result: Err(error.into_error()) });
        }
        self.running.insert(at, (worker, id));
    }

    fn answer(&mut self, at: AttemptId, call: u64, answer: Answer) {
        if let Some((w, id)) = self.running.get(&at) {
            let msg = match answer {
                Answer::Resolved(Ok(v)) => {
                    let result = match self.spill(&v) {
                        Some(r) => Outcome::Blob(r),
                        None => Outcome::Ok(v),
                    };
                    ToNode::Resolved { attempt_id: *id, id: call, result }
                }
                Answer::Resolved(Err(e)) => ToNode::Resolved { attempt_id: *id, id: call, result: Outcome::Err(e) },
                Answer::Value(value) => ToNode::Value { attempt_id: *id, id: call, value },
            };
            let _ = w.outbox.send(msg);
        }
    }

    fn stop(&mut self, at: AttemptId) {
        let Some((w, id)) = self.running.remove(&at) else { return };
        w.attempts.remove(id);
        if self.mode == PoolMode::Process {
            w.kill();
            return;
        }
        // Ask the body to stop; a body that does not (it blocks its thread) loses its process.
        let _ = w.outbox.send(ToNode::Cancel { attempt_id: id });
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while tokio::time::Instant::now() < deadline {
                if !w.busy.load(Ordering::SeqCst) || w.dead.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            w.kill();
        });
    }

    fn ended(&mut self, at: AttemptId) {
        self.running.remove(&at);
    }

    fn shutdown(&mut self) {
        for (_, (w, _)) in self.running.drain() {
            w.kill();
        }
        for w in self.workers.drain(..) {
            w.kill();
        }
    }
}
