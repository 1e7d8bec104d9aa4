// A task the macro refuses still has the signature it would have had: its callers compile,
// and the only errors are the ones about the task itself.
use salt::prelude::*;

#[task]
fn double(x: u64) -> u64 {
    x * 2
}

#[task]
async fn first<T: Clone>(items: Vec<T>) -> salt::Result<Option<T>> {
    Ok(items.first().cloned())
}

#[task]
async fn shout(text: &str) -> String {
    text.to_uppercase()
}

#[workflow]
async fn calls() -> salt::Result<u64> {
    let doubled: u64 = double(21).await?;
    let head: Option<u64> = first(vec![doubled]).await?;
    let loud: String = shout("hi").await?;
    Ok(head.unwrap_or_default() + loud.len() as u64)
}

fn main() {}
