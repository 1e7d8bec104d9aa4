use salt::prelude::*;

#[task(schedule = "0 3 * * *")]
async fn double(x: u64) -> u64 {
    x * 2
}

fn main() {}
