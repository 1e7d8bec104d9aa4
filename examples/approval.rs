//! A workflow that waits for a person: it prepares a payment, then parks until someone sends a
//! typed decision. While it waits it holds no process and no slot; the signal replays it.
//!
//! ```sh
//! cargo run --example approval -- run --input '{"amount": 1200}' &    # parks after `quote`
//! cargo run --example approval -- signal 1 decision '{"approved": true, "by": "ada"}'
//! ```

use salt::prelude::*;

/// A person's decision on a payment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    /// Whether to pay.
    pub approved: bool,
    /// Who decided.
    pub by: String,
    /// Why, if they said.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Computes what the payment costs, fees included.
#[task]
async fn quote(amount: u64) -> u64 {
    amount + amount / 100
}

/// Pays.
#[task]
async fn pay(total: u64, approver: String) -> String {
    format!("paid {total}, approved by {approver}")
}

// ANCHOR: workflow
/// Quotes, waits for a decision (at most a day, then it is a no), and pays if approved.
#[workflow(input = r#"{"amount": 1200}"#)]
async fn approval(amount: u64, ctx: &Context) -> salt::Result<String> {
    let total = quote(amount).await?;
    ctx.log(format!("waiting for a decision on {total}"));
    let no = Decision { approved: false, by: "nobody (timed out)".into(), comment: None };
    let decision: Decision = ctx.wait_for_or("decision", std::time::Duration::from_secs(86_400), no).await?;
    if decision.approved { pay(total, decision.by).await } else { Ok(format!("not paid: rejected by {}", decision.by)) }
}
// ANCHOR_END: workflow

fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/approval.db")
}
