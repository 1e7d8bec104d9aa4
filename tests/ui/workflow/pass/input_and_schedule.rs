use salt::prelude::*;

/// Runs every night.
#[workflow(input = r#"{"days": 7}"#, schedule = "0 3 * * *")]
async fn nightly(days: u32) -> salt::Result<u32> {
    Ok(days)
}

/// Runs every 15 minutes on weekdays, with no parameters.
#[workflow(schedule = "*/15 * * * MON-FRI")]
async fn poll() {}

fn main() {}
