//! Replay and the journal: a body that runs again binds its calls to what the journal holds
//! for the same `(node, seq)`, and a call that differs is a non-deterministic replay.

use serde_json::Value;

use super::Core;
use crate::attempt::{Answer, AttemptId};
use crate::call::JournalKind;
use crate::journal::Write;
use crate::model::{NodeId, StoredArg};

/// A stable hash of a call: FNV-1a over the task name and the canonical JSON of the arguments.
pub(super) fn hash_args(task: &str, args: &[(String, StoredArg)]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = serde_json::to_string(args).unwrap_or_default();
    for b in task.bytes().chain([0]).chain(text.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A call as an error message shows it.
pub(super) fn describe_call(task: &str, args: &[(String, StoredArg)]) -> String {
    let text = serde_json::to_string(args).unwrap_or_default();
    format!("spawn `{task}` with {}", crate::text::short_to(&text, 120))
}

/// The name of a journaled call as users write it.
pub(super) fn journal_name(kind: JournalKind) -> &'static str {
    match kind {
        JournalKind::Random => "random",
        JournalKind::Now => "now",
        JournalKind::Signal => "wait_for",
    }
}

impl Core {
    /// What the journal holds for call `seq` of `node`'s body, which now makes `call` of
    /// `kind`: `Ok(Some(value))` on a replay, `Ok(None)` the first time; a different recorded
    /// call (a spawn, or another journaled kind) fails the attempt as non-deterministic, except
    /// in a re-running body, where it supersedes what the body did from there on (`Ok(None)`).
    pub(super) fn replayed(
        &mut self,
        at: AttemptId,
        seq: u32,
        kind: JournalKind,
        call: String,
    ) -> Result<Option<Value>, ()> {
        let node = at.node;
        let expected = if let Some(&child) = self.keys.get(&(node, seq)) {
            let c = &self.nodes[child.index()];
            describe_call(c.task.name, &c.args)
        } else {
            match self.journal.get(&(node, seq)) {
                Some((k, v)) if *k == kind => return Ok(Some(v.clone())),
                Some((k, _)) => format!("`{}()`", journal_name(*k)),
                None => return Ok(None),
            }
        };
        if self.nodes[node.index()].rerun {
            // A re-running body calls something else here now: from here on it is new.
            self.supersede_from(node, seq);
            return Ok(None);
        }
        let e = self.nondeterministic(node, seq, expected, call);
        self.fail_attempt(at, e);
        Err(())
    }

    /// Records a journaled value (first run) for call `seq` of `node`'s body.
    pub(super) fn record(&mut self, node: NodeId, seq: u32, kind: JournalKind, value: Value) {
        self.journal.insert((node, seq), (kind, value.clone()));
        self.fx.writes.push(Write::Journal { run: self.run, node, seq, kind, value });
    }

    pub(super) fn journal_call(&mut self, at: AttemptId, call: u64, seq: u32, kind: JournalKind, value: Value) {
        let value = match self.replayed(at, seq, kind, format!("`{}()`", journal_name(kind))) {
            Err(()) => return,
            Ok(Some(recorded)) => recorded,
            Ok(None) => {
                self.record(at.node, seq, kind, value.clone());
                value
            }
        };
        self.answer(at, call, Answer::Value(value));
    }
}
