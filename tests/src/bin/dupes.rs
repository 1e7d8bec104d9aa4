//! A binary with two tasks of one name, which salt refuses at start-up.

mod billing {
    /// Sends an invoice.
    #[salt::task]
    pub async fn send() -> u32 {
        1
    }
}

mod mail {
    /// Sends a mail.
    #[salt::task]
    pub async fn send() -> u32 {
        2
    }
}

/// Uses both.
#[salt::workflow]
async fn both() -> salt::Result<u32> {
    Ok(billing::send().await? + mail::send().await?)
}

fn main() -> std::process::ExitCode {
    salt::main()
}
