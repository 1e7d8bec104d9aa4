//! The `salt` command.

fn main() -> std::process::ExitCode {
    salt_server::cli::main()
}
