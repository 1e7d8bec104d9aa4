use salt::prelude::*;

/// Does nothing, with a mutable parameter.
#[task(retries = 1, backoff = "500ms")]
async fn nothing(mut times: u32) {
    times += 1;
    let _ = times;
}

fn main() {
    let _handle: Handle<()> = nothing(3u32);
}
