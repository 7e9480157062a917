use std::process::ExitCode;

use clap::Parser;

/// See Cargo.toml: the process's allocator, for every thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rackboot::memory::without_huge_pages();
    rackboot::log::init();
    let cli = rackboot::cli::Cli::parse();
    if !matches!(cli.command, rackboot::cli::Command::Serve { .. }) {
        // A command's output piped into `head` ends like any Unix filter's:
        // quietly, by SIGPIPE, instead of a panic on the broken pipe (Rust
        // ignores SIGPIPE by default). Not for `serve`: a client closing its
        // socket must cost one write, not the process.
        // SAFETY: before any thread starts; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match rackboot::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line an admin can act on: the whole chain of causes.
            eprintln!("rackboot: error: {}", one_line(&e));
            // Scripts tell a refusal (1) from an unreachable server (3) and
            // a failed check (4); 2 is a bad command line (clap).
            match e.downcast_ref::<rackboot::cli::Failure>() {
                Some(f) => ExitCode::from(f.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes, joined by `: `. Many of rackboot's errors quote
/// their cause in their own message (logs print one level), so `{:#}` would
/// say it twice: a cause the line already holds is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
