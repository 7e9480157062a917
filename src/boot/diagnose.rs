//! Where a boot is stuck, in one short sentence, read from the node's
//! timeline. Pure: the node, its events, `now` and the timeouts are passed
//! in. The lifecycle sweep (`crate::sweep`) turns a stall into `failed` or
//! `unreachable` with the sentence as the reason; the API can show it as is.

use std::time::Duration;

use super::bootenv::LOCAL;
use super::lifecycle::rendered_bootenv;
use crate::model::{Event, EventKind, Node, NodeState, Timestamp};

/// How long a boot may go without its next step before it counts as stalled
/// (`[lifecycle]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Between two boot steps (DHCP, TFTP, script, kernel, the operational
    /// image's first report) and between two reports of a booted node.
    pub report: Duration,
    /// From an installer's kernel fetch to its install-complete callback.
    pub install: Duration,
    /// How long an agent that finished its scripts (configured or failed)
    /// may go without a heartbeat (its long-poll wait) before the node is
    /// `unreachable`. At least [`HEARTBEAT_MIN`].
    pub heartbeat: Duration,
}

/// The shortest heartbeat timeout that makes sense: a waiting agent's
/// heartbeat is its long poll, renewed about every 25 s.
pub const HEARTBEAT_MIN: Duration = Duration::from_secs(30);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            report: Duration::from_secs(10 * 60),
            install: Duration::from_secs(3 * 60 * 60),
            heartbeat: Duration::from_secs(2 * 60),
        }
    }
}

/// A boot that made no progress within its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// One sentence: the last step, when, and what never came after it.
    pub reason: String,
    /// When the last step happened.
    pub since: Timestamp,
    /// What the node's state becomes: `failed` for a boot that stopped,
    /// `unreachable` for a booted node that stopped reporting.
    pub verdict: NodeState,
}

/// Where `node`'s boot is stuck at `now`, or `None` when it is not: it is
/// still within its timeout, it finished (configured, failed, installed,
/// sent to its disk), or nothing it did was a boot step.
pub fn diagnose(node: &Node, events: &[Event], now: Timestamp, t: &Timeouts) -> Option<Stall> {
    let (deadline, stall) = pending(node, events, t)?;
    (now >= deadline).then_some(stall)
}

/// When the boot will count as stalled if nothing else happens, or `None`
/// when nothing is pending. Lets a caller skip a node until then.
pub fn stall_deadline(node: &Node, events: &[Event], t: &Timeouts) -> Option<Timestamp> {
    pending(node, events, t).map(|(deadline, _)| deadline)
}

/// Whether an event is a step of a boot. DHCP answers without a boot file
/// are not: they are plain clients, the operational image's own DHCP and its
/// renewals, or a node sent to its disk by `local_boot = "no_boot_file"`.
fn is_step(e: &Event) -> bool {
    use EventKind::*;
    match e.kind {
        DhcpOffer | DhcpAck => !e.detail.contains("no boot file"),
        DhcpIgnored | DhcpNak | TftpStart | TftpSent | TftpStopped | HttpScript | HttpKernel
        | HttpInitrd | HttpAsset | ConfigPull | ScriptFetch | ReportBooted | ReportScript
        | ReportConfigured | ReportFailed | ReportInstalled => true,
        // An installer fetching its answer file is no step of its own: its
        // install timeout runs from the kernel fetch.
        DhcpDiscover | DhcpRequest | DhcpRelease | DhcpDecline | DhcpRelay | State
        | BootenvChanged | HttpSeed | SecretRefused | AdminChange | AdminDelete => false,
    }
}

fn pending(node: &Node, events: &[Event], t: &Timeouts) -> Option<(Timestamp, Stall)> {
    let last = events.iter().rev().find(|e| is_step(e))?;
    let at = last.at;
    let first_line = last.detail.lines().next().unwrap_or_default();
    let limit = humantime::format_duration(t.report);
    let fail = |reason: String| (t.report, reason, NodeState::Failed);
    let (timeout, reason, verdict) = match last.kind {
        EventKind::DhcpOffer => match first_line.strip_prefix("proxyDHCP: ") {
            Some(boot) => fail(format!(
                "proxyDHCP offered {} at {at}, but the client never fetched it",
                boot_file(boot)
            )),
            None => fail(format!(
                "DHCP OFFER of {} at {at} was never REQUESTed (another DHCP server answered first, or the client rejected the offer)",
                first_line.split(',').next().unwrap_or_default()
            )),
        },
        EventKind::DhcpAck => {
            let boot = boot_file(first_line);
            if first_line.contains(".ipxe") {
                fail(format!(
                    "iPXE was handed its script URL at {at} but its boot never started (no script fetched from its own address, or no kernel fetched after it)"
                ))
            } else if boot.starts_with("http") {
                fail(format!(
                    "UEFI HTTP boot was handed {boot} at {at} but never fetched it"
                ))
            } else {
                fail(format!(
                    "DHCP ACK at {at} handed it {boot}, which it never fetched"
                ))
            }
        }
        EventKind::DhcpIgnored => fail(format!(
            "rackboot did not answer its DHCP request at {at}: {first_line}"
        )),
        EventKind::DhcpNak => fail(format!("DHCP NAK at {at} ({first_line}) and no DHCP since")),
        EventKind::TftpStart => fail(format!(
            "TFTP transfer of {first_line} started at {at} and never finished"
        )),
        EventKind::TftpStopped => fail(format!("TFTP transfer stopped at {at}: {first_line}")),
        EventKind::TftpSent | EventKind::HttpAsset => fail(format!(
            "{} was sent at {at}, but nothing came from it (no DHCP from iPXE, no script fetched)",
            first_line.split(" (").next().unwrap_or_default()
        )),
        EventKind::HttpScript => {
            let bootenv = rendered_bootenv(std::slice::from_ref(last)).unwrap_or_default();
            if bootenv == LOCAL {
                return None;
            }
            fail(format!(
                "boot script (bootenv {bootenv}) fetched at {at}, but no kernel"
            ))
        }
        EventKind::HttpKernel | EventKind::HttpInitrd if node.state == NodeState::Installing => {
            let bootenv = rendered_bootenv(events).unwrap_or("?");
            (
                t.install,
                format!(
                    "installer (bootenv {bootenv}) started at {at}, but no install-complete callback within {}",
                    humantime::format_duration(t.install)
                ),
                NodeState::Failed,
            )
        }
        EventKind::HttpKernel | EventKind::HttpInitrd => fail(format!(
            "{} {} fetched at {at}, but no report from the booted node within {limit}",
            if last.kind == EventKind::HttpKernel {
                "kernel"
            } else {
                "initrd"
            },
            first_line.split(',').next().unwrap_or_default()
        )),
        EventKind::ReportBooted
        | EventKind::ConfigPull
        | EventKind::ScriptFetch
        | EventKind::ReportScript => {
            let what = match last.kind {
                EventKind::ReportBooted => "its boot report".to_string(),
                EventKind::ConfigPull => "its config script list".to_string(),
                EventKind::ScriptFetch => format!("fetching config script {first_line}"),
                _ => format!("config script {first_line}"),
            };
            (
                t.report,
                format!("booted, but no report since {what} at {at} (timeout {limit})"),
                NodeState::Unreachable,
            )
        }
        // The agent ran its scripts and now waits for a reconfigure, its
        // wait requests being its heartbeats (they move last-seen, not the
        // timeline): silence for the heartbeat timeout means it is gone.
        EventKind::ReportConfigured | EventKind::ReportFailed => {
            let seen = node.last_seen.map_or(at, |s| s.max(at));
            let what = if last.kind == EventKind::ReportConfigured {
                "configured".to_string()
            } else {
                format!("failed ({first_line})")
            };
            let deadline = Timestamp(seen.0.saturating_add(t.heartbeat.as_millis() as i64));
            return Some((
                deadline,
                Stall {
                    reason: format!(
                        "{what} at {at}, but no heartbeat since {seen} (timeout {})",
                        humantime::format_duration(t.heartbeat)
                    ),
                    since: seen,
                    verdict: NodeState::Unreachable,
                },
            ));
        }
        EventKind::ReportInstalled => return None,
        _ => return None,
    };
    let deadline = Timestamp(at.0.saturating_add(timeout.as_millis() as i64));
    Some((
        deadline,
        Stall {
            reason,
            since: at,
            verdict,
        },
    ))
}

/// The boot file in a DHCP event's detail (`10.0.0.5, loader X by TFTP (…)`
/// or `10.0.0.5, http://… (…)`): `loader X` or the URL.
fn boot_file(detail: &str) -> &str {
    let rest = match detail.split_once(", ") {
        Some((ip, rest)) if ip.parse::<std::net::Ipv4Addr>().is_ok() => rest,
        _ => detail,
    };
    let rest = rest.rsplit_once(" (").map_or(rest, |(b, _)| b);
    rest.strip_suffix(" by TFTP").unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn ev(min: i64, kind: EventKind, detail: &str) -> Event {
        Event {
            at: Timestamp(min * MIN),
            kind,
            detail: detail.into(),
        }
    }

    fn node(state: NodeState) -> Node {
        let mut n = Node::discovered(
            "52:54:00:00:00:01".parse().unwrap(),
            "discovery",
            "t".into(),
            Timestamp(0),
        );
        n.state = state;
        n
    }

    fn t() -> Timeouts {
        Timeouts {
            report: Duration::from_secs(10 * 60),
            install: Duration::from_secs(60 * 60),
            heartbeat: Duration::from_secs(2 * 60),
        }
    }

    /// One boot, step by step: the timeline cut after each step, looked at
    /// 11 minutes later, says where it stopped.
    #[test]
    fn every_step_of_a_boot_has_its_diagnosis() {
        use EventKind::*;
        let boot = [
            ev(
                0,
                DhcpOffer,
                "10.77.0.100, loader ipxe-amd64.efi by TFTP (firmware, arch 7)",
            ),
            ev(
                1,
                DhcpAck,
                "10.77.0.100, loader ipxe-amd64.efi by TFTP (firmware, arch 7)",
            ),
            ev(2, TftpStart, "ipxe-amd64.efi (1048576 bytes)"),
            ev(3, TftpSent, "ipxe-amd64.efi (1048576 bytes)"),
            ev(
                4,
                DhcpAck,
                "10.77.0.100, http://10.77.0.1/boot/52:54:00:00:00:01.ipxe (iPXE, arch 7)",
            ),
            ev(5, HttpScript, "bootenv discovery, arch x86_64_efi"),
            ev(6, HttpKernel, "x86_64/vmlinuz"),
            ev(7, HttpInitrd, "x86_64/initrd.img"),
            ev(8, DhcpOffer, "10.77.0.100, no boot file (no PXE)"),
            ev(8, DhcpAck, "10.77.0.100, no boot file (no PXE)"),
            ev(9, ReportBooted, ""),
            ev(10, ConfigPull, "hello.sh"),
            ev(11, ScriptFetch, "hello.sh"),
            ev(12, ReportScript, "hello.sh exited 0\nhello"),
            ev(13, ReportConfigured, ""),
        ];
        use NodeState::{Failed, Unreachable};
        let want: [(&str, NodeState); 15] = [
            (
                "DHCP OFFER of 10.77.0.100 at 1970-01-01T00:00:00.000Z was never REQUESTed",
                Failed,
            ),
            (
                "DHCP ACK at 1970-01-01T00:01:00.000Z handed it loader ipxe-amd64.efi, which it never fetched",
                Failed,
            ),
            (
                "TFTP transfer of ipxe-amd64.efi (1048576 bytes) started at",
                Failed,
            ),
            (
                "ipxe-amd64.efi was sent at 1970-01-01T00:03:00.000Z, but nothing came from it",
                Failed,
            ),
            ("iPXE was handed its script URL at", Failed),
            (
                "boot script (bootenv discovery) fetched at 1970-01-01T00:05:00.000Z, but no kernel",
                Failed,
            ),
            (
                "kernel x86_64/vmlinuz fetched at 1970-01-01T00:06:00.000Z, but no report from the booted node within 10m",
                Failed,
            ),
            ("initrd x86_64/initrd.img fetched at", Failed),
            (
                "initrd x86_64/initrd.img fetched at 1970-01-01T00:07:00.000Z",
                Failed,
            ),
            (
                "initrd x86_64/initrd.img fetched at 1970-01-01T00:07:00.000Z",
                Failed,
            ),
            (
                "booted, but no report since its boot report at 1970-01-01T00:09:00.000Z (timeout 10m)",
                Unreachable,
            ),
            (
                "booted, but no report since its config script list at",
                Unreachable,
            ),
            (
                "booted, but no report since fetching config script hello.sh at",
                Unreachable,
            ),
            (
                "booted, but no report since config script hello.sh exited 0 at",
                Unreachable,
            ),
            (
                "configured at 1970-01-01T00:13:00.000Z, but no heartbeat since",
                Unreachable,
            ),
        ];
        let n = node(NodeState::Booting);
        for (i, (needle, verdict)) in want.iter().enumerate() {
            let events = &boot[..=i];
            let last = events[i].at;
            let before = Timestamp(last.0 + 10 * MIN - 1);
            let after = Timestamp(last.0 + 11 * MIN);
            // Offer and ack of the image's own DHCP are no steps: the
            // deadline stays that of the initrd.
            let step_at = events.iter().rev().find(|e| is_step(e)).unwrap().at;
            if events[i].kind == EventKind::ReportConfigured {
                // The heartbeat timeout (2m) from the report or the last heartbeat.
                let mut n = n.clone();
                n.last_seen = Some(Timestamp(last.0 + 5 * MIN));
                let due = Timestamp(last.0 + 7 * MIN);
                assert_eq!(stall_deadline(&n, events, &t()), Some(due));
                assert_eq!(diagnose(&n, events, Timestamp(due.0 - 1), &t()), None);
                let s = diagnose(&n, events, due, &t()).expect("unreachable");
                assert!(s.reason.starts_with(needle), "{}", s.reason);
                assert!(
                    s.reason
                        .ends_with("since 1970-01-01T00:18:00.000Z (timeout 2m)"),
                    "{}",
                    s.reason
                );
                assert_eq!((s.verdict, s.since), (*verdict, n.last_seen.unwrap()));
                continue;
            }
            assert_eq!(
                stall_deadline(&n, events, &t()),
                Some(Timestamp(step_at.0 + 10 * MIN)),
                "step {i}"
            );
            if step_at == last {
                assert_eq!(diagnose(&n, events, before, &t()), None, "step {i}");
            }
            let s = diagnose(&n, events, after, &t()).unwrap_or_else(|| panic!("step {i}"));
            assert!(s.reason.contains(needle), "step {i}: {}", s.reason);
            assert_eq!(s.verdict, *verdict, "step {i}");
            assert_eq!(s.since, step_at);
        }
    }

    #[test]
    fn finished_boots_and_local_boots_are_not_stalls() {
        use EventKind::*;
        let n = node(NodeState::Configured);
        let late = Timestamp(1000 * MIN);
        for last in [
            ev(1, ReportInstalled, "bootenv install"),
            ev(1, HttpScript, "bootenv local, arch bios"),
            ev(1, DhcpAck, "10.0.0.9, no boot file (firmware, arch 7)"),
        ] {
            assert_eq!(
                diagnose(&n, std::slice::from_ref(&last), late, &t()),
                None,
                "{last:?}"
            );
        }
        assert_eq!(diagnose(&n, &[], late, &t()), None);
        // Renewals and state changes after the end change nothing: a node
        // that heartbeats stays as it is, however long ago its report was.
        let mut n = n.clone();
        n.last_seen = Some(Timestamp(late.0 - MIN));
        for last in [
            ev(1, ReportConfigured, ""),
            ev(1, ReportFailed, "script a.sh exited 3"),
        ] {
            let events = [
                last,
                ev(30, DhcpAck, "10.0.0.9, no boot file (no PXE)"),
                ev(31, State, "x"),
            ];
            assert_eq!(diagnose(&n, &events, late, &t()), None);
        }
        // A failed node whose agent went silent is unreachable too.
        n.last_seen = Some(Timestamp(2 * MIN));
        let s = diagnose(
            &n,
            &[ev(1, ReportFailed, "script a.sh exited 3\ntail")],
            late,
            &t(),
        )
        .unwrap();
        assert_eq!(
            s.reason,
            "failed (script a.sh exited 3) at 1970-01-01T00:01:00.000Z, but no heartbeat since 1970-01-01T00:02:00.000Z (timeout 2m)"
        );
    }

    #[test]
    fn an_installer_gets_the_install_timeout() {
        use EventKind::*;
        let events = [
            ev(0, HttpScript, "bootenv debian-12, arch bios, once"),
            ev(1, HttpKernel, "debian/linux"),
            ev(2, HttpInitrd, "debian/initrd.gz"),
        ];
        let n = node(NodeState::Installing);
        assert_eq!(diagnose(&n, &events, Timestamp(30 * MIN), &t()), None);
        let s = diagnose(&n, &events, Timestamp(62 * MIN), &t()).unwrap();
        assert_eq!(
            s.reason,
            "installer (bootenv debian-12) started at 1970-01-01T00:02:00.000Z, but no install-complete callback within 1h"
        );
        assert_eq!(s.verdict, NodeState::Failed);
        // The installer's script fetched but no kernel: the report timeout.
        let s = diagnose(&n, &events[..1], Timestamp(11 * MIN), &t()).unwrap();
        assert!(s.reason.contains("no kernel"), "{}", s.reason);
    }

    #[test]
    fn dhcp_trouble_and_stopped_transfers_are_named() {
        use EventKind::*;
        let n = node(NodeState::Discovered);
        let late = Timestamp(100 * MIN);
        let cases = [
            (
                ev(1, DhcpIgnored, "unsupported client architecture 6"),
                "rackboot did not answer its DHCP request at 1970-01-01T00:01:00.000Z: unsupported client architecture 6",
            ),
            (
                ev(
                    1,
                    DhcpOffer,
                    "proxyDHCP: loader undionly.kpxe by TFTP (firmware, arch 0)",
                ),
                "proxyDHCP offered loader undionly.kpxe at 1970-01-01T00:01:00.000Z, but the client never fetched it",
            ),
            (
                ev(
                    1,
                    DhcpAck,
                    "10.0.0.5, http://10.0.0.1/assets/ipxe-amd64.efi?mac=52:54:00:00:00:01 (firmware, arch 16)",
                ),
                "UEFI HTTP boot was handed http://10.0.0.1/assets/ipxe-amd64.efi?mac=52:54:00:00:00:01 at",
            ),
            (
                ev(
                    1,
                    TftpStopped,
                    "undionly.kpxe: stopped after 65536 of 70000 bytes",
                ),
                "TFTP transfer stopped at 1970-01-01T00:01:00.000Z: undionly.kpxe: stopped after 65536 of 70000 bytes",
            ),
        ];
        for (e, want) in cases {
            let s = diagnose(&n, &[e], late, &t()).unwrap();
            assert!(s.reason.starts_with(want), "{}", s.reason);
            assert_eq!(s.verdict, NodeState::Failed);
        }
    }
}
