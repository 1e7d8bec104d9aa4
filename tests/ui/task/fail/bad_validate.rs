use salt::prelude::*;

fn by_value(x: u64) -> Result<(), String> {
    if x > 10 { Err("too big".to_string()) } else { Ok(()) }
}

fn no_result(_: &u64) -> bool {
    true
}

#[task(validate = by_value)]
async fn double(x: u64) -> u64 {
    x * 2
}

#[task(validate = no_result)]
async fn triple(x: u64) -> u64 {
    x * 3
}

#[task(validate = "by_value")]
async fn quintuple(x: u64) -> u64 {
    x * 5
}

fn main() {}
