use salt::prelude::*;

#[workflow(input = "[1, 2]")]
async fn sum(a: u64, b: u64) -> u64 {
    a + b
}

fn main() {}
