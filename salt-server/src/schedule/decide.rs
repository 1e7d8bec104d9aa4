//! What a schedule does at one tick of the clock: a pure function of the clock, the schedule's
//! cursor and policies and whether its previous run is still going.

use jiff::{SignedDuration, Timestamp};

use super::ScheduleSpec;
use crate::config::{Catchup, Overlap};

/// What [`decide`] looks at for one schedule.
#[derive(Debug, Clone)]
pub struct TickInput<'a> {
    /// When and where it fires.
    pub spec: &'a ScheduleSpec,
    /// The time now.
    pub now: Timestamp,
    /// Every occurrence at or before this time has been dealt with.
    pub cursor: Timestamp,
    /// Whether the schedule is paused.
    pub paused: bool,
    /// The overlap policy.
    pub overlap: Overlap,
    /// The catch-up policy.
    pub catchup: Catchup,
    /// An occurrence waiting for the previous run to end (overlap `buffer_one`).
    pub buffered: Option<Timestamp>,
    /// How late an occurrence may be noticed and still count as on time rather than missed.
    pub grace: SignedDuration,
}

/// Why an occurrence was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// On time.
    Cron,
    /// Missed while the server was down; started by the `run_once` catch-up policy.
    Catchup,
    /// By hand (`salt schedule trigger`).
    Trigger,
    /// By `salt schedule backfill`.
    Backfill,
}

impl Kind {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cron => "cron",
            Self::Catchup => "catchup",
            Self::Trigger => "trigger",
            Self::Backfill => "backfill",
        }
    }
}

/// What to do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a run for the occurrence at this time.
    Start(Timestamp, Kind),
    /// Start the buffered occurrence at this time: the run it waited for has ended.
    StartBuffered(Timestamp),
    /// Record the occurrence as buffered: it starts when the previous run ends.
    Buffer(Timestamp),
    /// Record the occurrence as skipped: the previous run was still going.
    SkipOverlap(Timestamp),
    /// Record the occurrence as missed: it was due while the server was down (catch-up `skip`).
    Missed(Timestamp),
}

/// What [`decide`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// In order.
    pub actions: Vec<Action>,
    /// The new cursor, when it has to be stored (an occurrence was dealt with).
    pub cursor: Option<Timestamp>,
}

/// Decides what one schedule does at `input.now`. `previous_running` says whether the run of
/// its latest started occurrence is still going; it is asked only when the answer matters.
///
/// - Paused: nothing happens, and nothing is owed: resuming moves the cursor to the time of
///   the resume, so no old occurrence fires then.
/// - Of the occurrences after the cursor and up to now only the latest counts (a tick loop
///   that fell behind never fires a burst): on time (within `grace`) it fires; older, it was
///   missed while the server was down and fires only under catch-up `run_once`.
/// - A buffered occurrence starts as soon as the previous run has ended.
/// - While the previous run is going: `skip` records the occurrence as skipped, `buffer_one`
///   buffers it unless one already waits (then it is skipped), `allow` starts it.
pub fn decide(input: &TickInput<'_>, previous_running: &mut dyn FnMut() -> bool) -> Decision {
    let mut actions = Vec::new();
    if input.paused || input.now <= input.cursor {
        return Decision { actions, cursor: None };
    }
    let mut running = None::<bool>;
    let mut is_running = |running: &mut Option<bool>| *running.get_or_insert_with(&mut *previous_running);
    let mut buffered = input.buffered;
    if let Some(at) = buffered
        && !is_running(&mut running)
    {
        actions.push(Action::StartBuffered(at));
        buffered = None;
        running = Some(true);
    }
    let Some(due) = input.spec.latest_in(input.cursor, input.now) else {
        return Decision { actions, cursor: None };
    };
    let on_time = input.now.duration_since(due) <= input.grace;
    let kind = match (on_time, input.catchup) {
        (true, _) => Kind::Cron,
        (false, Catchup::RunOnce) => Kind::Catchup,
        (false, Catchup::Skip) => {
            actions.push(Action::Missed(due));
            return Decision { actions, cursor: Some(input.now) };
        }
    };
    let action = match input.overlap {
        Overlap::Allow => Action::Start(due, kind),
        _ if !is_running(&mut running) => Action::Start(due, kind),
        Overlap::BufferOne if buffered.is_none() => Action::Buffer(due),
        Overlap::Skip | Overlap::BufferOne => Action::SkipOverlap(due),
    };
    actions.push(action);
    Decision { actions, cursor: Some(input.now) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    struct Fixture {
        spec: ScheduleSpec,
        overlap: Overlap,
        catchup: Catchup,
        paused: bool,
        buffered: Option<Timestamp>,
    }

    impl Fixture {
        fn new(cron: &str) -> Self {
            Self {
                spec: ScheduleSpec::parse(cron, "UTC").unwrap(),
                overlap: Overlap::Skip,
                catchup: Catchup::Skip,
                paused: false,
                buffered: None,
            }
        }

        fn at(&self, cursor: &str, now: &str, running: bool) -> (Decision, usize) {
            let input = TickInput {
                spec: &self.spec,
                now: ts(now),
                cursor: ts(cursor),
                paused: self.paused,
                overlap: self.overlap,
                catchup: self.catchup,
                buffered: self.buffered,
                grace: SignedDuration::from_secs(10),
            };
            let mut asked = 0;
            let d = decide(&input, &mut || {
                asked += 1;
                running
            });
            (d, asked)
        }
    }

    #[test]
    fn an_occurrence_fires_once_when_due_and_not_before() {
        let f = Fixture::new("0 3 * * *");
        let (d, asked) = f.at("2024-05-01T02:00:00Z", "2024-05-01T02:59:59Z", false);
        assert_eq!(d, Decision { actions: vec![], cursor: None });
        assert_eq!(asked, 0, "nothing due: the run store is not asked");
        let (d, _) = f.at("2024-05-01T02:00:00Z", "2024-05-01T03:00:00.400Z", false);
        assert_eq!(d.actions, [Action::Start(ts("2024-05-01T03:00:00Z"), Kind::Cron)]);
        assert_eq!(d.cursor, Some(ts("2024-05-01T03:00:00.400Z")));
        let (d, _) = f.at("2024-05-01T03:00:00.400Z", "2024-05-01T03:00:01.400Z", false);
        assert!(d.actions.is_empty(), "the next tick does not fire it again");
    }

    #[test]
    fn a_tick_loop_that_fell_behind_fires_the_latest_occurrence_only() {
        let f = Fixture::new("* * * * * *");
        let (d, _) = f.at("2024-05-01T03:00:00Z", "2024-05-01T03:00:04.100Z", false);
        assert_eq!(d.actions, [Action::Start(ts("2024-05-01T03:00:04Z"), Kind::Cron)]);
    }

    #[test]
    fn catchup_skip_drops_what_was_missed_while_down() {
        let f = Fixture::new("0 * * * *");
        // Down from 01:30 to 05:20: 02:00 … 05:00 were missed.
        let (d, _) = f.at("2024-05-01T01:30:00Z", "2024-05-01T05:20:00Z", false);
        assert_eq!(d.actions, [Action::Missed(ts("2024-05-01T05:00:00Z"))]);
        assert_eq!(d.cursor, Some(ts("2024-05-01T05:20:00Z")));
        // Back within the grace: the occurrence that just came due fires.
        let (d, _) = f.at("2024-05-01T01:30:00Z", "2024-05-01T05:00:05Z", false);
        assert_eq!(d.actions, [Action::Start(ts("2024-05-01T05:00:00Z"), Kind::Cron)]);
    }

    #[test]
    fn catchup_run_once_fires_one_run_for_all_missed() {
        let mut f = Fixture::new("0 * * * *");
        f.catchup = Catchup::RunOnce;
        let (d, _) = f.at("2024-05-01T01:30:00Z", "2024-05-01T05:20:00Z", false);
        assert_eq!(d.actions, [Action::Start(ts("2024-05-01T05:00:00Z"), Kind::Catchup)]);
        // Missed a year of every-second ticks: still one run, quickly decided.
        let f = Fixture { catchup: Catchup::RunOnce, ..Fixture::new("* * * * * *") };
        let started = std::time::Instant::now();
        let (d, _) = f.at("2023-05-01T00:00:00Z", "2024-05-01T05:20:00.5Z", false);
        assert_eq!(d.actions, [Action::Start(ts("2024-05-01T05:20:00Z"), Kind::Cron)]);
        let (d, _) = f.at("2023-05-01T00:00:00Z", "2024-05-01T05:20:30.5Z", false);
        assert_eq!(d.actions, [Action::Start(ts("2024-05-01T05:20:30Z"), Kind::Cron)]);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_paused_schedule_fires_nothing() {
        let mut f = Fixture::new("* * * * * *");
        f.paused = true;
        f.catchup = Catchup::RunOnce;
        let (d, asked) = f.at("2024-05-01T03:00:00Z", "2024-05-01T04:00:00Z", false);
        assert_eq!((d, asked), (Decision { actions: vec![], cursor: None }, 0));
    }

    #[test]
    fn overlap_skip_skips_while_the_previous_run_goes() {
        let f = Fixture::new("*/5 * * * * *");
        let (d, asked) = f.at("2024-05-01T03:00:00Z", "2024-05-01T03:00:05Z", true);
        assert_eq!(d.actions, [Action::SkipOverlap(ts("2024-05-01T03:00:05Z"))]);
        assert_eq!(asked, 1);
    }

    #[test]
    fn overlap_allow_starts_without_asking() {
        let mut f = Fixture::new("*/5 * * * * *");
        f.overlap = Overlap::Allow;
        let (d, asked) = f.at("2024-05-01T03:00:00Z", "2024-05-01T03:00:05Z", true);
        assert_eq!(d.actions, [Action::Start(ts("2024-05-01T03:00:05Z"), Kind::Cron)]);
        assert_eq!(asked, 0);
    }

    #[test]
    fn overlap_buffer_one_keeps_one_and_starts_it_when_the_run_ends() {
        let mut f = Fixture::new("*/5 * * * * *");
        f.overlap = Overlap::BufferOne;
        let (d, _) = f.at("2024-05-01T03:00:00Z", "2024-05-01T03:00:05Z", true);
        assert_eq!(d.actions, [Action::Buffer(ts("2024-05-01T03:00:05Z"))]);
        f.buffered = Some(ts("2024-05-01T03:00:05Z"));
        let (d, _) = f.at("2024-05-01T03:00:05Z", "2024-05-01T03:00:10Z", true);
        assert_eq!(d.actions, [Action::SkipOverlap(ts("2024-05-01T03:00:10Z"))], "only one waits");
        let (d, _) = f.at("2024-05-01T03:00:10Z", "2024-05-01T03:00:12Z", false);
        assert_eq!(d.actions, [Action::StartBuffered(ts("2024-05-01T03:00:05Z"))]);
        assert_eq!(d.cursor, None);
        // The buffered run starts and the next occurrence is due in the same tick: the started
        // one counts as running.
        let (d, asked) = f.at("2024-05-01T03:00:10Z", "2024-05-01T03:00:15Z", false);
        assert_eq!(
            d.actions,
            [Action::StartBuffered(ts("2024-05-01T03:00:05Z")), Action::Buffer(ts("2024-05-01T03:00:15Z"))]
        );
        assert_eq!(asked, 1);
    }

    #[test]
    fn a_clock_that_went_back_fires_nothing() {
        let f = Fixture::new("* * * * * *");
        let (d, _) = f.at("2024-05-01T03:00:10Z", "2024-05-01T03:00:05Z", false);
        assert!(d.actions.is_empty() && d.cursor.is_none());
    }
}
