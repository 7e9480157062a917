//! The `rackboot` command line.

mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rackboot",
    version,
    about = "PXE network boot appliance: DHCPv4, TFTP, HTTP and DNS in one process"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DHCP, TFTP, HTTP and DNS on the boot network.
    Serve {
        /// The configuration file (see configs/rackboot.toml).
        #[arg(long, short, default_value = "/etc/rackboot/rackboot.toml")]
        config: PathBuf,
    },
    /// Check the configuration, bootenvs and config scripts, and exit.
    Check {
        #[arg(long, short, default_value = "/etc/rackboot/rackboot.toml")]
        config: PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve::serve(&config),
        Command::Check { config } => serve::check(&config),
    }
}
