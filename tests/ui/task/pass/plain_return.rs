use salt::prelude::*;

/// Doubles a number.
#[task]
async fn double(x: u64) -> u64 {
    x * 2
}

fn main() {
    let _handle: Handle<u64> = double(2u64);
}
