use salt::prelude::*;

/// Takes the context between its inputs, by either path.
#[task]
async fn greet(name: String, ctx: &salt::Context, times: u8) -> String {
    ctx.log("greeting");
    name.repeat(times.into())
}

/// Ignores the context.
#[task]
async fn ignore(_: &Context) -> std::result::Result<u8, salt::Error> {
    Ok(1)
}

fn main() {
    let _ = greet("salt", 2u8);
    let _ = ignore();
}
