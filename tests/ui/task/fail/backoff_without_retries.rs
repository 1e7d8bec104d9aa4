use salt::prelude::*;

/// A backoff, but nothing to wait before: no retries.
#[task(backoff = "exponential(1s, 30s)")]
async fn fetch(url: String) -> salt::Result<String> {
    Ok(url)
}

/// A backoff with zero retries.
#[workflow(retries = 0, backoff = "2s")]
async fn flow() -> salt::Result<String> {
    fetch("https://example.com".to_string()).await
}

fn main() {}
