// An error type that is not a `std::error::Error` cannot become a `salt::Error`.
use salt::prelude::*;

#[derive(Debug)]
struct Oops;

#[task]
async fn fragile(x: u64) -> Result<u64, Oops> {
    if x == 0 { Err(Oops) } else { Ok(x) }
}

fn main() {}
