use salt::prelude::*;

struct Checker;

const LIMIT: u64 = 10;

#[task(pre = Checker)]
async fn resize(width: u64) -> u64 {
    width * 2
}

#[task(post = LIMIT)]
async fn shrink(width: u64) -> u64 {
    width / 2
}

#[task(on_failure = "clean_up")]
async fn crop(width: u64) -> u64 {
    width
}

fn main() {}
