use salt::prelude::*;

#[task(retires = 3, backoff = "linear(1s)")]
fn mix((a, b): (u8, u8), flag: impl Into<bool>, one: &Context, two: &Context) -> u8 {
    let _ = (flag, one, two);
    a + b
}

fn main() {}
