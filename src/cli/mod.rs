//! The `rackboot` command line.

mod assets;
mod bootenv;
mod client;
mod explain;
pub(crate) mod node;
mod power;
mod rollout;
mod serve;
mod store;
mod storm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::assets::ArchSpec;

pub use client::Failure;

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

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Import and inspect kernels and initrds in the assets directory.
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// Node records through the API: list, show, set, bulk, delete, import, export, history.
    Node {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: node::NodeCommand,
    },
    /// Bootenvs in force, and checking bootenv files before they go live.
    Bootenv {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: bootenv::BootenvCommand,
    },
    /// What a client with this MAC would be handed right now, and why.
    Explain {
        #[command(flatten)]
        connection: client::Connection,
        mac: String,
        /// Its firmware: option 93 number or bios, x86_64_efi, arm64_efi,
        /// x86_64_http, arm64_http (default: what it announced last).
        #[arg(long)]
        arch: Option<String>,
        /// Its DHCP user class, e.g. iPXE.
        #[arg(long)]
        user_class: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A node's timeline: DHCP, TFTP, HTTP, reports, state changes.
    Events {
        #[command(flatten)]
        connection: client::Connection,
        mac: String,
        #[arg(long)]
        json: bool,
    },
    /// Power status and control through each node's BMC (its record's
    /// `bmc`): status, on, off, cycle, pxe-once. Exit 4: some node's BMC
    /// did not do it (the reason is printed and on its timeline).
    Power {
        #[command(flatten)]
        connection: client::Connection,
        #[command(flatten)]
        args: power::PowerArgs,
    },
    /// Reinstalling a fleet a few nodes at a time: start, list, status,
    /// pause, resume, abort.
    Rollout {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// A synthetic fleet booting against a PXE server: DHCP, TFTP, iPXE,
    /// HTTP, reports; ends with per-phase latency percentiles, throughput
    /// and every failure. Exit 0: all nodes booted; 4: some failed; 1: could not start.
    Storm(storm::StormArgs),
    /// The store: moving a site from SQLite to PostgreSQL.
    #[command(subcommand)]
    Store(store::StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// Check a kernel is built for --arch, store it and its initrds under
    /// `<assets_dir>/sha256/<digest>`, and name them in a bootenv (--bootenv)
    /// or print a bootenv snippet naming them.
    Add {
        #[arg(long, short, default_value = "/etc/rackboot/rackboot.toml")]
        config: PathBuf,
        /// The kernel's architecture: x86_64 (bios and x86_64_efi) or arm64
        /// (arm64_efi); or one boot architecture (bios, x86_64_efi, arm64_efi).
        #[arg(long)]
        arch: ArchSpec,
        #[arg(long)]
        kernel: PathBuf,
        /// An initrd; repeat for several, in boot order.
        #[arg(long = "initrd")]
        initrds: Vec<PathBuf>,
        /// Write the stored paths into <bootenvs_dir>/NAME.toml for --arch
        /// (created if missing), after checking the bootenvs still load.
        #[arg(long)]
        bootenv: Option<String>,
    },
    /// Say what a kernel file is (bzImage, arm64 Image, EFI, compressed) and its architecture.
    Identify { file: PathBuf },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve::serve(&config),
        Command::Check { config } => serve::check(&config),
        Command::Assets(AssetsCommand::Add {
            config,
            arch,
            kernel,
            initrds,
            bootenv,
        }) => assets::add(&config, &arch, &kernel, &initrds, bootenv.as_deref()),
        Command::Assets(AssetsCommand::Identify { file }) => assets::identify(&file),
        Command::Node {
            connection,
            command,
        } => node::run(&client::Client::new(&connection)?, command),
        Command::Bootenv {
            connection,
            command,
        } => bootenv::run(&client::Client::new(&connection)?, command),
        Command::Explain {
            connection,
            mac,
            arch,
            user_class,
            json,
        } => explain::explain(
            &client::Client::new(&connection)?,
            &mac,
            arch.as_deref(),
            user_class.as_deref(),
            json,
        ),
        Command::Events {
            connection,
            mac,
            json,
        } => explain::events(&client::Client::new(&connection)?, &mac, json),
        Command::Power { connection, args } => power::run(&client::Client::new(&connection)?, args),
        Command::Rollout {
            connection,
            command,
        } => rollout::run(&client::Client::new(&connection)?, command),
        Command::Storm(args) => storm::storm(args),
        Command::Store(command) => store::run(command),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
