use salt::prelude::*;

mod checks {}

#[task(validate = checks::missing)]
async fn quadruple(x: u64) -> u64 {
    x * 4
}

fn main() {}
