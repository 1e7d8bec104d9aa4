use salt::prelude::*;

#[task(retries = "three")]
async fn double(x: u64) -> u64 {
    x * 2
}

fn main() {}
