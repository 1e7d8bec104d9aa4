use salt::prelude::*;

#[task(retries = 1, queue = "io", retries = 2)]
async fn double(x: u64) -> u64 {
    x * 2
}

fn main() {}
