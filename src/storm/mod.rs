//! `rackboot storm`: a synthetic fleet booting against a PXE server, to
//! measure it and to find where it breaks. Each simulated node has its own
//! MAC, architecture and UUID ([`fleet`]) and goes through a real boot's
//! network steps: DHCP as PXE firmware ([`dhcp_client`]), TFTP of the
//! loader ([`tftp_client`]), DHCP again as iPXE, the iPXE script, kernel
//! and initrds ([`ipxe`], [`http`]), then the operational image's reports
//! and config pull. The result ([`report`]) is per-phase latency
//! percentiles, throughput and every failure by phase and reason.
//!
//! The protocol clients are written from the RFCs and the behaviour of real
//! firmware, and use nothing of rackboot's server code: the DHCP and TFTP
//! phases work against any PXE server (`--phases dhcp,tftp`); the HTTP
//! phases speak rackboot's node endpoints.

pub mod dhcp_client;
pub mod dhcp_socket;
pub mod fleet;
pub mod http;
pub mod ipxe;
mod node;
mod progress;
pub mod report;
pub mod tftp_client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use dhcp_socket::Mode;
pub use report::{Phase, Report};

/// What to run.
#[derive(Debug, Clone)]
pub struct StormConfig {
    pub mode: Mode,
    pub nodes: u32,
    pub seed: u64,
    pub archs: fleet::ArchMix,
    /// Nodes booting at once, at most.
    pub concurrency: usize,
    /// Nodes powered on per second; `None`: all at once.
    pub ramp: Option<f64>,
    pub phases: Vec<Phase>,
    /// Each phase of each node must end within this.
    pub phase_timeout: Duration,
    pub dhcp_retry: dhcp_client::Retry,
    pub tftp: tftp_client::Options,
    /// The once-a-second line on stderr.
    pub progress: bool,
}

impl StormConfig {
    /// One line saying what runs against what, for the report's heading.
    pub fn describe(&self) -> String {
        let via = match &self.mode {
            Mode::Relay { giaddr, server } => format!("DHCP relayed from {giaddr} to {server}"),
            Mode::Direct { interface } => format!("DHCP broadcast on {interface}"),
        };
        let ramp = match self.ramp {
            Some(r) => format!("{r} nodes/s"),
            None => "all at once".into(),
        };
        format!(
            "rackboot storm: {} nodes (arch {}; seed {}), {via}; power-on {ramp}, at most {} at once; phases {}; TFTP blksize {} windowsize {}",
            self.nodes,
            self.archs
                .0
                .iter()
                .map(|a| a.0.to_string())
                .collect::<Vec<_>>()
                .join(","),
            self.seed,
            self.concurrency,
            self.phases
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(","),
            self.tftp.blksize,
            self.tftp.windowsize,
        )
    }
}

/// Why a storm could not start (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum StormError {
    #[error("DHCP socket: {0}")]
    DhcpSocket(#[source] std::io::Error),
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Runs the storm to its end: every node finishes or fails within its
/// phases' bounds, so this returns after at most about nodes/ramp plus
/// phases × phase timeout.
pub async fn run(cfg: StormConfig) -> Result<Report, StormError> {
    let cfg = Arc::new(cfg);
    let dhcp = dhcp_socket::DhcpSocket::bind(&cfg.mode).map_err(StormError::DhcpSocket)?;
    let http = http::client(cfg.phase_timeout).map_err(StormError::HttpClient)?;
    let progress = Arc::new(progress::Progress::default());
    let shared = Arc::new(node::Shared {
        cfg: cfg.clone(),
        dhcp,
        http,
        progress: progress.clone(),
    });

    let started = Instant::now();
    let stop = CancellationToken::new();
    let shown = cfg.progress.then(|| {
        let (p, stop, total, phases) = (
            progress.clone(),
            stop.clone(),
            cfg.nodes as usize,
            cfg.phases.clone(),
        );
        tokio::spawn(async move { p.show(started, total, &phases, stop).await })
    });

    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..cfg.nodes {
        if let Some(rate) = cfg.ramp {
            let at = started + Duration::from_secs_f64(f64::from(i) / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let id = fleet::node(cfg.seed, i, &cfg.archs);
        let shared = shared.clone();
        tasks.spawn(async move {
            let out = node::boot(&shared, id).await;
            drop(permit);
            out
        });
    }
    let mut outcomes = Vec::with_capacity(cfg.nodes as usize);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(o) => outcomes.push(o),
            // A node task cannot panic by design; if one did, say so rather than lose it.
            Err(e) => outcomes.push(report::NodeOutcome {
                mac: "?".into(),
                failure: Some(report::Failure {
                    phase: Phase::Dhcp,
                    reason: format!("storm node task failed: {e}"),
                    detail: String::new(),
                }),
                ..Default::default()
            }),
        }
    }
    let wall = started.elapsed();
    stop.cancel();
    if let Some(h) = shown {
        let _ = h.await;
    }
    outcomes.sort_by(|a, b| a.mac.cmp(&b.mac));
    let mut report = Report::new(cfg.describe(), &cfg.phases, &outcomes, wall);
    let stray = shared
        .dhcp
        .unmatched
        .load(std::sync::atomic::Ordering::Relaxed);
    if stray > 0 {
        report.setup.push_str(&format!(
            "\n({stray} DHCP replies matched no waiting node: duplicates or late answers)"
        ));
    }
    Ok(report)
}
