//! What a storm found: per-phase latency percentiles, throughput, and every
//! failure, grouped by phase and reason. Pure: node outcomes in, a table or
//! JSON out.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// The steps of one simulated boot, in the order a node runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Firmware PXE: DISCOVER/OFFER/REQUEST/ACK.
    Dhcp,
    /// The first-stage loader the ACK names, by TFTP.
    Tftp,
    /// DHCP again as iPXE (user class `iPXE`).
    IpxeDhcp,
    /// The iPXE script at the URL that ACK names.
    Script,
    Kernel,
    /// Every initrd the script fetches.
    Initrd,
    /// The operational image's `report?state=booted`.
    Booted,
    /// Config generation, script list, each script and its report.
    Config,
    /// `report?state=configured`.
    Configured,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Dhcp,
        Phase::Tftp,
        Phase::IpxeDhcp,
        Phase::Script,
        Phase::Kernel,
        Phase::Initrd,
        Phase::Booted,
        Phase::Config,
        Phase::Configured,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Dhcp => "dhcp",
            Phase::Tftp => "tftp",
            Phase::IpxeDhcp => "ipxe-dhcp",
            Phase::Script => "script",
            Phase::Kernel => "kernel",
            Phase::Initrd => "initrd",
            Phase::Booted => "booted",
            Phase::Config => "config",
            Phase::Configured => "configured",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Phase, String> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown phase `{s}` (phases: {})",
                    Phase::ALL.map(Phase::name).join(", ")
                )
            })
    }
}

/// The phases a storm runs: always a prefix of [`Phase::ALL`], since each
/// phase needs what the one before it returned (the DHCP server's boot
/// file for TFTP, the script for the kernel, the command line's token for
/// the reports).
pub fn parse_phases(s: &str) -> Result<Vec<Phase>, String> {
    if s.trim() == "all" {
        return Ok(Phase::ALL.to_vec());
    }
    let mut asked: Vec<Phase> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    asked.sort();
    asked.dedup();
    let Some(last) = asked.last() else {
        return Err("no phase given (try all, or dhcp,tftp)".into());
    };
    let prefix = &Phase::ALL[..=last.index()];
    if asked != prefix {
        let missing: Vec<&str> = prefix
            .iter()
            .filter(|p| !asked.contains(p))
            .map(|p| p.name())
            .collect();
        return Err(format!(
            "phase `{}` needs the phases before it; add {}",
            last.name(),
            missing.join(", ")
        ));
    }
    Ok(asked)
}

/// Why one node stopped. `reason` is the same text for every node that
/// failed the same way (it is what failures are grouped by); `detail`
/// carries what is particular to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub phase: Phase,
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One simulated node's boot.
#[derive(Debug, Clone, Default)]
pub struct NodeOutcome {
    pub mac: String,
    /// Each phase it completed: how long it took and the bytes it moved.
    pub phases: Vec<(Phase, Duration, u64)>,
    pub failure: Option<Failure>,
    /// From its first packet to its last answer.
    pub total: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples` (sorted here); `None` if empty.
    pub fn of(samples: &mut [Duration]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            ms(samples[i - 1])
        };
        Some(Latency {
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: ms(samples[samples.len() - 1]),
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub phase: Phase,
    pub ok: usize,
    pub failed: usize,
    pub latency: Option<Latency>,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    pub phase: Phase,
    pub reason: String,
    pub count: usize,
    /// Every node that failed this way, with what was particular to it.
    pub nodes: Vec<FailedNode>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedNode {
    pub mac: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The storm's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run, in words (target, mode, options), for the heading.
    pub setup: String,
    pub nodes: usize,
    pub ok: usize,
    pub failed: usize,
    pub wall_seconds: f64,
    /// Nodes that completed every phase, per second of wall time.
    pub nodes_per_second: f64,
    pub phases: Vec<PhaseStats>,
    /// A node's whole run, for the nodes that completed it.
    pub end_to_end: Option<Latency>,
    pub failures: Vec<FailureGroup>,
}

impl Report {
    pub fn new(
        setup: String,
        phases: &[Phase],
        outcomes: &[NodeOutcome],
        wall: Duration,
    ) -> Report {
        let mut samples: BTreeMap<Phase, Vec<Duration>> = BTreeMap::new();
        let mut bytes: BTreeMap<Phase, u64> = BTreeMap::new();
        let mut failed_in: BTreeMap<Phase, usize> = BTreeMap::new();
        let mut groups: BTreeMap<(Phase, String), Vec<FailedNode>> = BTreeMap::new();
        let mut totals = Vec::new();
        for o in outcomes {
            for &(p, d, b) in &o.phases {
                samples.entry(p).or_default().push(d);
                *bytes.entry(p).or_default() += b;
            }
            match &o.failure {
                Some(f) => {
                    *failed_in.entry(f.phase).or_default() += 1;
                    groups
                        .entry((f.phase, f.reason.clone()))
                        .or_default()
                        .push(FailedNode {
                            mac: o.mac.clone(),
                            detail: f.detail.clone(),
                        });
                }
                None => totals.push(o.total),
            }
        }
        let ok = totals.len();
        let mut failures: Vec<FailureGroup> = groups
            .into_iter()
            .map(|((phase, reason), nodes)| FailureGroup {
                phase,
                reason,
                count: nodes.len(),
                nodes,
            })
            .collect();
        failures.sort_by(|a, b| a.phase.cmp(&b.phase).then(b.count.cmp(&a.count)));
        Report {
            setup,
            nodes: outcomes.len(),
            ok,
            failed: outcomes.len() - ok,
            wall_seconds: (wall.as_secs_f64() * 100.0).round() / 100.0,
            nodes_per_second: if wall.is_zero() {
                0.0
            } else {
                (ok as f64 / wall.as_secs_f64() * 10.0).round() / 10.0
            },
            phases: phases
                .iter()
                .map(|&p| {
                    let s = samples.entry(p).or_default();
                    PhaseStats {
                        phase: p,
                        ok: s.len(),
                        failed: failed_in.get(&p).copied().unwrap_or(0),
                        latency: Latency::of(s),
                        bytes: bytes.get(&p).copied().unwrap_or(0),
                    }
                })
                .collect(),
            end_to_end: Latency::of(&mut totals),
            failures,
        }
    }

    /// The table for a person: one line per phase, then throughput and failures.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.setup);
        let _ = writeln!(
            s,
            "{} nodes: {} ok, {} failed, in {:.1} s",
            self.nodes, self.ok, self.failed, self.wall_seconds
        );
        let _ = writeln!(
            s,
            "{:<11} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "phase", "ok", "failed", "p50", "p90", "p99", "max", "bytes"
        );
        let row = |s: &mut String,
                   name: &str,
                   ok: usize,
                   failed: usize,
                   l: &Option<Latency>,
                   bytes: String| {
            let f = |v: Option<f64>| v.map(fmt_ms).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{:<11} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10}",
                name,
                ok,
                failed,
                f(l.as_ref().map(|l| l.p50_ms)),
                f(l.as_ref().map(|l| l.p90_ms)),
                f(l.as_ref().map(|l| l.p99_ms)),
                f(l.as_ref().map(|l| l.max_ms)),
                bytes
            );
        };
        for p in &self.phases {
            let b = if p.bytes > 0 {
                fmt_bytes(p.bytes)
            } else {
                "-".into()
            };
            row(&mut s, p.phase.name(), p.ok, p.failed, &p.latency, b);
        }
        row(
            &mut s,
            "end-to-end",
            self.ok,
            self.failed,
            &self.end_to_end,
            "-".into(),
        );
        let moved: u64 = self.phases.iter().map(|p| p.bytes).sum();
        let _ = writeln!(
            s,
            "throughput: {:.1} nodes/s through every phase, {}/s moved ({} in all)",
            self.nodes_per_second,
            fmt_bytes((moved as f64 / self.wall_seconds.max(0.001)) as u64),
            fmt_bytes(moved)
        );
        if self.failures.is_empty() {
            let _ = writeln!(s, "failures: none");
        } else {
            let _ = writeln!(s, "failures ({} nodes):", self.failed);
            for g in &self.failures {
                let _ = writeln!(s, "  {:<10} {:>5} × {}", g.phase.name(), g.count, g.reason);
                const SHOWN: usize = 5;
                for n in g.nodes.iter().take(SHOWN) {
                    let detail = if n.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", n.detail)
                    };
                    let _ = writeln!(s, "               {}{detail}", n.mac);
                }
                if g.nodes.len() > SHOWN {
                    let _ = writeln!(
                        s,
                        "               … and {} more (all in --json)",
                        g.nodes.len() - SHOWN
                    );
                }
            }
        }
        s
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}ms")
    } else {
        format!("{v:.1}ms")
    }
}

pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_must_be_a_prefix() {
        assert_eq!(
            parse_phases("dhcp,tftp").unwrap(),
            [Phase::Dhcp, Phase::Tftp]
        );
        assert_eq!(
            parse_phases("tftp,dhcp").unwrap(),
            [Phase::Dhcp, Phase::Tftp]
        );
        assert_eq!(parse_phases("all").unwrap().len(), 9);
        let e = parse_phases("dhcp,kernel").unwrap_err();
        assert!(e.contains("add tftp, ipxe-dhcp, script"), "{e}");
        assert!(parse_phases("pxe").unwrap_err().contains("unknown phase"));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::of(&mut v).unwrap();
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(Latency::of(&mut one).unwrap().p99_ms, 7.0);
        assert!(Latency::of(&mut []).is_none());
    }

    #[test]
    fn failures_are_grouped_by_phase_and_reason_with_every_mac() {
        let ok = |mac: &str| NodeOutcome {
            mac: mac.into(),
            phases: vec![
                (Phase::Dhcp, Duration::from_millis(3), 0),
                (Phase::Tftp, Duration::from_millis(9), 1000),
            ],
            failure: None,
            total: Duration::from_millis(12),
        };
        let failed = |mac: &str, phase, reason: &str| NodeOutcome {
            mac: mac.into(),
            phases: vec![],
            failure: Some(Failure {
                phase,
                reason: reason.into(),
                detail: String::new(),
            }),
            total: Duration::ZERO,
        };
        let outcomes = vec![
            ok("a"),
            ok("b"),
            failed("c", Phase::Tftp, "busy"),
            failed("d", Phase::Dhcp, "no OFFER"),
            failed("e", Phase::Tftp, "busy"),
        ];
        let r = Report::new(
            "test".into(),
            &[Phase::Dhcp, Phase::Tftp],
            &outcomes,
            Duration::from_secs(2),
        );
        assert_eq!((r.nodes, r.ok, r.failed), (5, 2, 3));
        assert_eq!(r.nodes_per_second, 1.0);
        assert_eq!(r.phases[1].bytes, 2000);
        assert_eq!(r.phases[1].failed, 2);
        assert_eq!(r.failures.len(), 2);
        assert_eq!(r.failures[0].phase, Phase::Dhcp);
        assert_eq!(r.failures[1].count, 2);
        let macs: Vec<&str> = r.failures[1].nodes.iter().map(|n| n.mac.as_str()).collect();
        assert_eq!(macs, ["c", "e"]);
        let t = r.table();
        assert!(t.contains("failures (3 nodes)"), "{t}");
        assert!(t.contains("tftp           2 × busy"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["phases"][0]["phase"], "dhcp");
        assert_eq!(json["failures"][1]["nodes"][1]["mac"], "e");
    }
}
