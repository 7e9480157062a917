//! `rackboot storm`: the command line of [`crate::storm`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::Failure;
use crate::storm::{self, Mode, StormConfig, dhcp_client, fleet, report, tftp_client};

#[derive(Debug, Args)]
pub struct StormArgs {
    /// The DHCP server to relay to (with --relay).
    #[arg(long, requires = "relay")]
    server: Option<Ipv4Addr>,
    /// Act as a DHCP relay at this address (giaddr): bind <RELAY>:67, send to
    /// --server:67, get the replies back here. One socket for every node.
    /// The address must be on this host and routed to from the server.
    #[arg(long, requires = "server", conflicts_with = "interface")]
    relay: Option<Ipv4Addr>,
    /// Broadcast DHCP on this interface as clients on the link do (binds
    /// 0.0.0.0:68 on it: no DHCP client may run on it).
    #[arg(long, required_unless_present = "relay")]
    interface: Option<String>,
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Nodes booting at once, at most (default: all of them).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Nodes powered on per second (default: all at once). --nodes 1000
    /// --ramp 17 is a thousand machines switched on within a minute.
    #[arg(long)]
    ramp: Option<f64>,
    /// Firmware architectures (option 93), each node draws one: `mix`
    /// (bios, x86_64_efi, arm64_efi), or a list of names or numbers (0,7,11).
    #[arg(long, default_value = "mix")]
    arch: fleet::ArchMix,
    /// Seed for MACs (02:xx:xx:...), UUIDs, architectures and xids: the same
    /// seed gives the same fleet (and the same node records) again.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The phases to run, a prefix of: dhcp, tftp, ipxe-dhcp, script, kernel,
    /// initrd, booted, config, configured; or `all`. Against a PXE server
    /// other than rackboot: dhcp,tftp (with ipxe-dhcp,script,kernel,initrd if
    /// it serves iPXE over HTTP).
    #[arg(long, default_value = "all", value_parser = report::parse_phases)]
    phases: Vec<Vec<report::Phase>>,
    /// Each phase of each node must end within this (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The first DHCP retransmission, doubling after (RFC 2131: 4s).
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    dhcp_retry: Duration,
    /// TFTP block size asked for (RFC 2348).
    #[arg(long, default_value_t = 1468, value_parser = clap::value_parser!(u16).range(8..=65464))]
    tftp_blksize: u16,
    /// TFTP window asked for, in blocks (RFC 7440; 1 = lockstep).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    tftp_windowsize: u16,
    /// Resend a TFTP packet after this long without an answer (5 tries).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    tftp_retransmit: Duration,
    /// Also write the report as JSON to this file (`-` for stdout, instead of the table).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs the storm and prints its report. Exit status: 0 every node went
/// through every phase; 4 some node failed (the report names each); 1 the
/// storm could not start (bad arguments, socket not bindable).
pub fn storm(args: StormArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        return Err(Failure::Input("--nodes must be at least 1".into()).into());
    }
    if args.ramp.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(
            Failure::Input("--ramp must be a positive number of nodes per second".into()).into(),
        );
    }
    let mode = match (args.relay, args.server, args.interface) {
        (Some(giaddr), Some(server), _) => Mode::Relay { giaddr, server },
        (_, _, Some(interface)) => Mode::Direct { interface },
        _ => return Err(Failure::Input("give --relay and --server, or --interface".into()).into()),
    };
    let cfg = StormConfig {
        mode,
        nodes: args.nodes,
        seed: args.seed,
        archs: args.arch,
        concurrency: args.concurrency.unwrap_or(args.nodes as usize).max(1),
        ramp: args.ramp,
        phases: args
            .phases
            .into_iter()
            .next_back()
            .unwrap_or_else(|| report::Phase::ALL.to_vec()),
        phase_timeout: args.timeout,
        dhcp_retry: dhcp_client::Retry {
            first: args.dhcp_retry,
            ..dhcp_client::Retry::default()
        },
        tftp: tftp_client::Options {
            blksize: args.tftp_blksize,
            windowsize: args.tftp_windowsize,
            retransmit: args.tftp_retransmit,
            ..tftp_client::Options::default()
        },
        progress: !args.quiet,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(storm::run(cfg))?;
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some(p) => {
            std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("writing the JSON report to {}", p.display()))?;
            print!("{}", report.table());
        }
        None => print!("{}", report.table()),
    }
    if report.failed > 0 {
        return Err(Failure::CheckFailed(format!(
            "{} of {} nodes failed (see the report's failures)",
            report.failed, report.nodes
        ))
        .into());
    }
    Ok(())
}
