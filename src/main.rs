use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_env("RACKBOOT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn,hickory_net=warn,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = rackboot::cli::Cli::parse();
    match rackboot::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line an admin can act on: the whole chain of causes.
            eprintln!("rackboot: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
