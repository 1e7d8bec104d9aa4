use salt::prelude::*;

struct Doubler;

impl Doubler {
    #[task]
    async fn double(&self, x: u64) -> u64 {
        x * 2
    }
}

fn main() {}
