use salt::prelude::*;

struct Config {
    verbose: bool,
}

#[task]
async fn configure(config: Config) -> bool {
    config.verbose
}

fn main() {}
