use salt::prelude::*;

struct Report {
    lines: u64,
}

#[task]
async fn report(lines: u64) -> salt::Result<Report> {
    Ok(Report { lines })
}

fn main() {}
