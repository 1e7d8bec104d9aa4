use salt::prelude::*;

#[task]
async fn extract() -> u32 {
    1
}

/// A shape with a dangling arrow.
#[workflow(promise = "extract -> -> load")]
async fn pipeline() -> salt::Result<u32> {
    extract().await
}

/// A keyword form that does not exist.
#[workflow(promise = "no new things")]
async fn other() -> salt::Result<u32> {
    extract().await
}

fn main() {}
