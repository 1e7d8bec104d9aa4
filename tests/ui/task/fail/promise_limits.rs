use salt::prelude::*;

/// Parentheses nested past the limit.
#[task(spawns, promise = "((((((((((((((((((((((((((((((((((A))))))))))))))))))))))))))))))))))")]
async fn too_deep() -> u32 {
    1
}

/// A count past the limit.
#[task(spawns, promise = "A -> M{100000000} -> B")]
async fn too_many() -> u32 {
    1
}

/// A repetition of repetitions past the limit.
#[task(spawns, promise = "A{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}{2}")]
async fn too_nested() -> u32 {
    1
}

fn main() {}
