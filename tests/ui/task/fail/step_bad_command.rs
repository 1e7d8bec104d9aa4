use salt::prelude::*;

// A step action whose expression is neither a command nor a future, and one that is not a
// call at all.
#[task(pre = std::path::Path::new("data.csv").exists())]
async fn load(path: String) -> u64 {
    path.len() as u64
}

#[task(post = [salt::shell("true")])]
async fn store(path: String) -> u64 {
    path.len() as u64
}

fn main() {}
