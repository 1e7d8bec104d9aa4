use salt::prelude::*;

// Not async.
fn check(width: &u64) -> salt::Result<()> {
    let _ = width;
    Ok(())
}

// Returns a bool, not `salt::Result<()>`.
async fn verify(width: &u64, out: &u64) -> bool {
    width < out
}

// Takes the input by value.
async fn clean_up(width: u64, error: &salt::Error) -> salt::Result<()> {
    let _ = (width, error);
    Ok(())
}

#[task(pre = check, post = verify, on_failure = clean_up)]
async fn resize(width: u64) -> u64 {
    width * 2
}

// `post` without the output.
async fn forgets_output(width: &u64) -> salt::Result<()> {
    let _ = width;
    Ok(())
}

#[task(post = forgets_output)]
async fn shrink(width: u64) -> u64 {
    width / 2
}

#[workflow(pre = forgets_output)]
async fn flow(width: u64) -> salt::Result<u64> {
    resize(width).await
}

fn main() {}
