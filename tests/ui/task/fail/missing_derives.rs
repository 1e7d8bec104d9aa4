// A type with no derive at all, as input and as output, of a task that is also called: one
// error for each place the type is used in the signature, each with the derive to add.
use salt::prelude::*;

struct Config {
    verbose: bool,
}

#[derive(Serialize, Deserialize)]
struct Report {
    lines: u64,
}

#[task]
async fn configure(config: Config) -> Report {
    Report { lines: u64::from(config.verbose) }
}

#[workflow]
async fn caller() -> salt::Result<()> {
    let _ = configure(Config { verbose: true });
    Ok(())
}

fn main() {}
