//! salt's benchmarks.
fn main() {}
