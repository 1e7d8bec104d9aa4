use salt::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
struct Sized {
    #[schemars(range(min = 1))]
    n: u64,
}

fn positive(s: &Sized) -> Result<(), String> {
    if s.n == 0 { Err("zero".to_string()) } else { Ok(()) }
}

mod checks {
    pub(crate) fn small(x: &u64) -> salt::Result<()> {
        if *x > 100 { Err(salt::Error::fatal("too big")) } else { Ok(()) }
    }
}

#[task(validate = positive)]
async fn make(n: u64) -> salt::Result<Sized> {
    Ok(Sized { n })
}

#[task(validate = checks::small)]
async fn double(x: u64) -> u64 {
    x * 2
}

#[workflow(validate = crate::checks::small)]
async fn both(x: u64) -> salt::Result<u64> {
    Ok(make(x).await?.n + double(x).await?)
}

fn main() {}
