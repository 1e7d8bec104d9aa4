use salt::prelude::*;

#[workflow(schedule = "every night")]
async fn nightly() {}

fn main() {}
