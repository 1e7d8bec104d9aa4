use salt::prelude::*;

/// Doubles a number.
#[task]
async fn double(x: u64) -> u64 {
    x * 2
}

/// Adds two numbers.
#[task]
async fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Wires one handle into two inputs.
#[workflow]
async fn wiring(x: u64) -> salt::Result<u64> {
    let a = double(x);
    add(a.clone(), a).await
}

fn main() {}
