use salt::prelude::*;

#[task]
async fn shout(text: &str) -> String {
    text.to_uppercase()
}

fn main() {}
