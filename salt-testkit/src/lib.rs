//! Test support shared by salt's test suites.
//!
//! [`postgres::database`] gives a test a fresh, empty PostgreSQL database on loopback: on the
//! server named by `SALT_TEST_POSTGRES` (a `postgres://` URL) when that is set, otherwise on a
//! throwaway server this process starts from the machine's PostgreSQL binaries (Debian's
//! `postgresql` package) and stops when it exits. [`most_at_once`] tells how many of a set of
//! intervals overlapped at one instant, for tests of concurrency limits.

pub mod postgres;

/// The most intervals `(start, end)` that overlap at one instant (an interval that ends when
/// another starts does not overlap it).
pub fn most_at_once(intervals: &[(u128, u128)]) -> usize {
    let mut edges: Vec<(u128, i32)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // An end before a start at the same instant.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// When each of `steps` steps started and ended, as they wrote it (ns, one number a file) to
/// `dir/start.N` and `dir/end.N` (the `crowd` workflow of the `commands` example).
pub fn step_intervals(dir: &std::path::Path, steps: usize) -> Vec<(u128, u128)> {
    let read = |f: String| -> u128 {
        let text = std::fs::read_to_string(dir.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        text.trim().parse().unwrap_or_else(|e| panic!("{f}: {text:?}: {e}"))
    };
    (0..steps).map(|i| (read(format!("start.{i}")), read(format!("end.{i}")))).collect()
}

/// A finished process's exit status, stdout and stderr, for an assertion's message.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn most_at_once_counts_overlaps_not_touches() {
        assert_eq!(super::most_at_once(&[]), 0);
        assert_eq!(super::most_at_once(&[(0, 10), (10, 20), (20, 30)]), 1);
        assert_eq!(super::most_at_once(&[(0, 10), (5, 15), (9, 20), (15, 16)]), 3);
    }
}
