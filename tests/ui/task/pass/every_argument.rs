use salt::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Row {
    id: u64,
}

/// Reads rows.
#[task(
    name = "extract_rows",
    retries = 2,
    backoff = "exponential(1s, 30s)",
    timeout = "10s",
    queue = "io",
    priority = -5,
    label = "Extract",
    color = "#ff0000",
    promise = "no new edges",
    promise = "only tasks extract_rows"
)]
pub async fn extract(source: String, ctx: &Context) -> salt::Result<Vec<Row>> {
    ctx.log(format!("reading {source}"));
    Ok(vec![Row { id: 1 }])
}

fn main() {}
