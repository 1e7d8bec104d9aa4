use salt::prelude::*;

#[task(retires = 3)]
async fn double(x: u64) -> u64 {
    x * 2
}

fn main() {}
