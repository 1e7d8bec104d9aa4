//! The records of runs, nodes, edges and attempts (defined in `salt-core`), and this host's
//! clock.

pub use salt_core::model::*;

/// Milliseconds since the Unix epoch, now, by this host's clock (shifted by
/// `SALT_TEST_CLOCK_SKEW_MS`, which tests set to play a host whose clock is wrong).
pub fn now_ms() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let skew =
        *SKEW.get_or_init(|| std::env::var("SALT_TEST_CLOCK_SKEW_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(0));
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    now + skew
}
