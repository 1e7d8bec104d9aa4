//! The run core lives in `salt-core` ([`salt_core::run`]); this module gives it what it takes
//! from the world: the time of each input, read from this host's clocks, and the machine whose
//! cores and memory the runs of this process share.

use std::sync::Arc;

pub(crate) use salt_core::run::{Action, Capacity, Config, Core, Effects, Note, Placement, SharedCapacity, Time};

/// Now, on both clocks.
pub(crate) fn now() -> Time {
    Time { instant: std::time::Instant::now(), unix_ms: crate::model::now_ms() }
}

/// What the running attempts of all the runs of this process hold of its cores and memory,
/// together: a run's ready queue starts a sized attempt only when it fits beside them, so two
/// runs driven by one process never start more than the machine offers between them.
#[derive(Debug)]
pub(crate) struct Machine {
    used: std::sync::Mutex<Capacity>,
    /// Counts what was given back: a driver whose runs wait for cores or memory watches it.
    freed: tokio::sync::watch::Sender<u64>,
}

impl Machine {
    /// A machine on which nothing is held.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { used: std::sync::Mutex::new(Capacity::NONE), freed: tokio::sync::watch::Sender::new(0) })
    }

    /// This process's machine, shared by every run it drives.
    pub(crate) fn process() -> Arc<Self> {
        static MACHINE: std::sync::OnceLock<Arc<Machine>> = std::sync::OnceLock::new();
        MACHINE.get_or_init(Machine::new).clone()
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Capacity> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that sees a change each time cores or memory are given back.
    pub(crate) fn watch_freed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.freed.subscribe()
    }
}

impl SharedCapacity for Machine {
    /// Takes `ask` if it fits within `cap` beside what is held: whether it did.
    fn try_take(&self, ask: Capacity, cap: Capacity) -> bool {
        let mut used = self.used();
        let fits = ask.fits(*used, cap);
        if fits {
            *used = used.plus(ask);
        }
        fits
    }

    /// Takes `ask` whatever is held (a body that waited for its children goes on).
    fn take(&self, ask: Capacity) {
        let mut used = self.used();
        *used = used.plus(ask);
    }

    /// Gives `ask` back, and tells the drivers that watch.
    fn free(&self, ask: Capacity) {
        if ask == Capacity::NONE {
            return;
        }
        {
            let mut used = self.used();
            *used = used.minus(ask);
        }
        self.freed.send_modify(|n| *n = n.wrapping_add(1));
    }
}
