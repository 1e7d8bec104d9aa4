//! A secret input: an API token that reaches the task's body but is never stored or shown.
//!
//! ```text
//! DEPLOY_TOKEN=tok-123 cargo run --example secret -- run
//! cargo run --example secret -- show 1     # the input holds {"$secret": "DEPLOY_TOKEN"}
//! cargo run --example secret -- logs 1     # "with token Secret(***)"
//! ```
//!
//! The workflow's input names the environment variable, `{"$secret": "DEPLOY_TOKEN"}`; the
//! value is read from the environment when the input is decoded, in the process that runs the
//! body. The database, `show`, `logs` and `graph` only ever hold the name. Without the
//! variable, `run` refuses the input before anything is stored.

use salt::Secret;
use salt::prelude::*;

/// What the deployment service returns: its receipt. The body proves it had the token by its
/// length and fingerprint, without returning the token.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Receipt {
    /// The service deployed.
    service: String,
    /// The token's length in bytes.
    token_len: usize,
    /// The token's FNV-1a hash, in hex.
    token_fnv1a: String,
}

/// The 64-bit FNV-1a hash of `bytes`: a fingerprint that shows which token was used.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Deploys `service` with `token` (here: computes its receipt).
#[task(retries = 2)]
async fn deploy_service(service: String, token: Secret<String>) -> Receipt {
    // `Debug` of a Secret prints `Secret(***)`: this line is safe in the attempt's log.
    println!("deploying {service} with token {token:?}");
    let token = token.expose();
    Receipt { service, token_len: token.len(), token_fnv1a: format!("{:016x}", fnv1a(token.as_bytes())) }
}

/// Deploys one service; the token goes from the run's input to the task as a reference.
#[workflow(input = r#"{"service": "billing", "token": {"$secret": "DEPLOY_TOKEN"}}"#)]
async fn deploy(service: String, token: Secret<String>) -> salt::Result<Receipt> {
    deploy_service(service, token).await
}

/// The command line: `run`, `runs`, `show`, `logs`, `graph`… (`--help` lists them).
fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/secret.db")
}
