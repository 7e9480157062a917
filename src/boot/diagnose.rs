//! Where a boot is stuck, in one short sentence, read from the node's
//! timeline. Pure: the node, its events, `now` and the timeouts are passed
//! in. The lifecycle sweep (`crate::sweep`) turns a stall into `failed` or
//! `unreachable` with the sentence as the reason; the API can show it as is.

use std::time::Duration;

use super::bootenv::LOCAL;
use crate::model::{
    BootTarget, DhcpService, Event, EventData, EventKind, Node, NodeState, Timestamp,
};

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
    match &e.data {
        EventData::DhcpOffer { boot_file, .. } | EventData::DhcpAck { boot_file, .. } => {
            boot_file.is_some()
        }
        // Written before events had data: whether a DHCP answer had a boot
        // file is in its text only, which is never read back; counted as
        // no step, so such an answer alone never fails a node.
        EventData::Note {
            of: DhcpOffer | DhcpAck,
            ..
        } => false,
        _ => match e.kind() {
            DhcpIgnored | DhcpNak | TftpStart | TftpSent | TftpStopped | HttpScript
            | HttpKernel | HttpInitrd | HttpAsset | ConfigPull | ScriptFetch | ReportBooted
            | ReportScript | ReportConfigured | ReportFailed | ReportInstalled => true,
            // An installer fetching its answer file is no step of its own: its
            // install timeout runs from the kernel fetch.
            DhcpOffer | DhcpAck | DhcpDiscover | DhcpRequest | DhcpRelease | DhcpDecline
            | DhcpRelay | State | BootenvChanged | HttpSeed | SecretRefused | AdminChange
            | AdminDelete | Power | Rollout | Identity => false,
        },
    }
}

/// What to add when a UEFI loader went out and nothing came of it: the
/// likeliest cause is a firmware with Secure Boot on, which refuses iPXE.
fn unsigned_hint(file: &str) -> &'static str {
    if file.ends_with(".efi") && !file.contains("shim") && !file.contains("grub") {
        "; UEFI firmware with Secure Boot on refuses an unsigned loader: boot such a machine through the signed shim and GRUB (loader = \"grub\")"
    } else {
        ""
    }
}

fn pending(node: &Node, events: &[Event], t: &Timeouts) -> Option<(Timestamp, Stall)> {
    use EventKind::*;
    let last = events.iter().rev().find(|e| is_step(e))?;
    let at = last.at;
    let limit = humantime::format_duration(t.report);
    let fail = |reason: String| (t.report, reason, NodeState::Failed);
    let kind = last.kind();
    // A TFTP file after the boot started (the GRUB chain fetches its
    // kernel and initrds by TFTP) is a kernel or initrd, not a loader.
    let after_boot_start = matches!(kind, TftpStart | TftpSent)
        && events
            .iter()
            .rev()
            .take_while(|e| !matches!(e.kind(), DhcpAck | DhcpOffer))
            .any(|e| e.kind() == HttpScript);
    // What the last step was, in words, for the steps of a booted node.
    let booted_step = match &last.data {
        EventData::ReportBooted { .. } => Some("its boot report".to_string()),
        EventData::ConfigPull { .. } => Some("its config script list".to_string()),
        EventData::ScriptFetch { script } => Some(format!("fetching config script {script}")),
        EventData::ReportScript {
            script,
            status,
            duration_ms,
            ..
        } => Some(format!(
            "config script {}",
            EventData::script_result(script, *status, *duration_ms)
        )),
        EventData::Note { of, .. }
            if matches!(of, ReportBooted | ConfigPull | ScriptFetch | ReportScript) =>
        {
            Some(format!("its last report ({of})"))
        }
        _ => None,
    };
    // A booted node whose agent ran its scripts: configured, or failed and why.
    let finished = match &last.data {
        EventData::ReportConfigured { .. } => Some("configured".to_string()),
        EventData::ReportFailed { script, status, .. } => Some(format!(
            "failed ({})",
            EventData::failure_reason(script.as_deref(), *status)
        )),
        EventData::Note {
            of: ReportConfigured,
            ..
        } => Some("configured".to_string()),
        EventData::Note {
            of: ReportFailed, ..
        } => Some("failed".to_string()),
        _ => None,
    };
    let (timeout, reason, verdict) = if let Some(what) = booted_step {
        (
            t.report,
            format!("booted, but no report since {what} at {at} (timeout {limit})"),
            NodeState::Unreachable,
        )
    } else if let Some(what) = finished {
        // The agent ran its scripts and now waits for a reconfigure, its
        // wait requests being its heartbeats (they move last-seen, not the
        // timeline): silence for the heartbeat timeout means it is gone.
        let seen = node.last_seen.map_or(at, |s| s.max(at));
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
    } else if (matches!(kind, HttpKernel | HttpInitrd) || after_boot_start)
        && node.state == NodeState::Installing
    {
        let bootenv = node.booted_bootenv.as_deref().unwrap_or("?");
        (
            t.install,
            format!(
                "installer (bootenv {bootenv}) started at {at}, but no install-complete callback within {}",
                humantime::format_duration(t.install)
            ),
            NodeState::Failed,
        )
    } else {
        match &last.data {
            EventData::DhcpOffer {
                service: DhcpService::Proxy,
                boot_file: Some(boot),
                ..
            } => fail(format!(
                "proxyDHCP offered {boot} at {at}, but the client never fetched it"
            )),
            EventData::DhcpOffer { addr, .. } => fail(format!(
                "DHCP OFFER of {} at {at} was never REQUESTed (another DHCP server answered first, or the client rejected the offer)",
                addr.map_or_else(|| "boot information".to_string(), |a| a.to_string())
            )),
            EventData::DhcpAck {
                boot_file: Some(BootTarget::Script(_)),
                ..
            } => fail(format!(
                "iPXE was handed its script URL at {at} but its boot never started (no script fetched from its own address, or no kernel fetched after it)"
            )),
            EventData::DhcpAck {
                boot_file: Some(boot @ BootTarget::Http(_)),
                ..
            } => fail(format!(
                "UEFI HTTP boot was handed {boot} at {at} but never fetched it"
            )),
            EventData::DhcpAck {
                boot_file: Some(boot),
                ..
            } => fail(format!(
                "DHCP ACK at {at} handed it {boot}, which it never fetched"
            )),
            EventData::DhcpIgnored { reason } => fail(format!(
                "rackboot did not answer its DHCP request at {at}: {reason}"
            )),
            EventData::DhcpNak { reason } => {
                fail(format!("DHCP NAK at {at} ({reason}) and no DHCP since"))
            }
            EventData::TftpStart { file, .. } | EventData::TftpSent { file, .. }
                if after_boot_start =>
            {
                fail(format!(
                    "{file} fetched by TFTP at {at}, but no report from the booted node within {limit}"
                ))
            }
            EventData::TftpStart { file, size } => fail(format!(
                "TFTP transfer of {file} ({size} bytes) started at {at} and never finished"
            )),
            EventData::TftpStopped { .. } => {
                fail(format!("TFTP transfer stopped at {at}: {}", last.data))
            }
            EventData::TftpSent { file, .. } => fail(format!(
                "{file} was sent at {at}, but nothing came from it (no DHCP from iPXE, no script fetched){}",
                unsigned_hint(file)
            )),
            EventData::HttpAsset { path, .. } => fail(format!(
                "{} was sent at {at}, but nothing came from it (no DHCP from iPXE, no script fetched){}",
                last.data,
                unsigned_hint(path)
            )),
            EventData::HttpScript { bootenv, .. } => {
                if bootenv == LOCAL {
                    return None;
                }
                fail(format!(
                    "boot script (bootenv {bootenv}) fetched at {at}, but no kernel"
                ))
            }
            EventData::HttpKernel { path, .. } => fail(format!(
                "kernel {path} fetched at {at}, but no report from the booted node within {limit}"
            )),
            EventData::HttpInitrd { path, .. } => fail(format!(
                "initrd {path} fetched at {at}, but no report from the booted node within {limit}"
            )),
            EventData::ReportInstalled { .. } => return None,
            // A boot step written before events had data: which step, and
            // when; what it was about is in its text only.
            EventData::Note { of, .. } if *of != ReportInstalled => fail(format!(
                "the last boot step was {of} at {at}, and nothing came after it within {limit}"
            )),
            _ => return None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BootArch, Choice, ClientArch, TftpStop};

    const MIN: i64 = 60_000;

    fn ev(min: i64, data: EventData) -> Event {
        Event::new(Timestamp(min * MIN), data)
    }

    fn offer(addr: &str, boot_file: Option<BootTarget>, arch: Option<u16>) -> EventData {
        EventData::DhcpOffer {
            service: DhcpService::Dhcp,
            addr: Some(addr.parse().unwrap()),
            boot_file,
            arch: arch.map(ClientArch),
            ipxe: false,
        }
    }

    fn ack(addr: &str, boot_file: Option<BootTarget>, arch: Option<u16>, ipxe: bool) -> EventData {
        EventData::DhcpAck {
            service: DhcpService::Dhcp,
            addr: Some(addr.parse().unwrap()),
            boot_file,
            arch: arch.map(ClientArch),
            ipxe,
        }
    }

    fn tftp(f: &str) -> Option<BootTarget> {
        Some(BootTarget::Tftp(f.into()))
    }

    fn script(bootenv: &str, choice: Choice) -> EventData {
        EventData::HttpScript {
            bootenv: bootenv.into(),
            arch: BootArch::X86_64Efi,
            choice,
        }
    }

    fn kernel(path: &str) -> EventData {
        EventData::HttpKernel {
            path: path.into(),
            range: None,
        }
    }

    fn initrd(path: &str) -> EventData {
        EventData::HttpInitrd {
            path: path.into(),
            range: None,
        }
    }

    fn output(s: &str) -> String {
        s.to_string()
    }

    fn failed(script: &str, status: i32, out: &str) -> EventData {
        EventData::ReportFailed {
            script: Some(script.into()),
            status: Some(status),
            output: output(out),
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
        let boot = [
            ev(0, offer("10.77.0.100", tftp("ipxe-amd64.efi"), Some(7))),
            ev(
                1,
                ack("10.77.0.100", tftp("ipxe-amd64.efi"), Some(7), false),
            ),
            ev(
                2,
                EventData::TftpStart {
                    file: "ipxe-amd64.efi".into(),
                    size: 1048576,
                },
            ),
            ev(
                3,
                EventData::TftpSent {
                    file: "ipxe-amd64.efi".into(),
                    size: 1048576,
                },
            ),
            ev(
                4,
                ack(
                    "10.77.0.100",
                    Some(BootTarget::Script(
                        "http://10.77.0.1/boot/52:54:00:00:00:01.ipxe".into(),
                    )),
                    Some(7),
                    true,
                ),
            ),
            ev(5, script("discovery", Choice::Base)),
            ev(6, kernel("x86_64/vmlinuz")),
            ev(7, initrd("x86_64/initrd.img")),
            ev(8, offer("10.77.0.100", None, None)),
            ev(8, ack("10.77.0.100", None, None, false)),
            ev(9, EventData::ReportBooted { output: output("") }),
            ev(
                10,
                EventData::ConfigPull {
                    scripts: vec!["hello.sh".into()],
                },
            ),
            ev(
                11,
                EventData::ScriptFetch {
                    script: "hello.sh".into(),
                },
            ),
            ev(
                12,
                EventData::ReportScript {
                    script: "hello.sh".into(),
                    status: 0,
                    duration_ms: None,
                    output: output("hello"),
                },
            ),
            ev(13, EventData::ReportConfigured { output: output("") }),
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
            if events[i].kind() == EventKind::ReportConfigured {
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
        let n = node(NodeState::Configured);
        let late = Timestamp(1000 * MIN);
        for last in [
            ev(
                1,
                EventData::ReportInstalled {
                    bootenv: "install".into(),
                    output: output(""),
                },
            ),
            ev(1, script("local", Choice::Base)),
            ev(1, ack("10.0.0.9", None, Some(7), false)),
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
            ev(1, EventData::ReportConfigured { output: output("") }),
            ev(1, failed("a.sh", 3, "")),
        ] {
            let events = [
                last,
                ev(30, ack("10.0.0.9", None, None, false)),
                ev(
                    31,
                    EventData::moved(NodeState::Configured, NodeState::Failed, "x"),
                ),
            ];
            assert_eq!(diagnose(&n, &events, late, &t()), None);
        }
        // A failed node whose agent went silent is unreachable too.
        n.last_seen = Some(Timestamp(2 * MIN));
        let s = diagnose(&n, &[ev(1, failed("a.sh", 3, "tail"))], late, &t()).unwrap();
        assert_eq!(
            s.reason,
            "failed (script a.sh exited 3) at 1970-01-01T00:01:00.000Z, but no heartbeat since 1970-01-01T00:02:00.000Z (timeout 2m)"
        );
    }

    #[test]
    fn an_installer_gets_the_install_timeout() {
        let events = [
            ev(0, script("debian-12", Choice::Once)),
            ev(1, kernel("debian/linux")),
            ev(2, initrd("debian/initrd.gz")),
        ];
        let mut n = node(NodeState::Installing);
        n.booted_bootenv = Some("debian-12".into());
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
        let n = node(NodeState::Discovered);
        let late = Timestamp(100 * MIN);
        let cases = [
            (
                ev(
                    1,
                    EventData::DhcpIgnored {
                        reason: "unsupported client architecture 6".into(),
                    },
                ),
                "rackboot did not answer its DHCP request at 1970-01-01T00:01:00.000Z: unsupported client architecture 6",
            ),
            (
                ev(
                    1,
                    EventData::DhcpOffer {
                        service: DhcpService::Proxy,
                        addr: None,
                        boot_file: tftp("undionly.kpxe"),
                        arch: Some(ClientArch(0)),
                        ipxe: false,
                    },
                ),
                "proxyDHCP offered loader undionly.kpxe at 1970-01-01T00:01:00.000Z, but the client never fetched it",
            ),
            (
                ev(
                    1,
                    ack(
                        "10.0.0.5",
                        Some(BootTarget::Http(
                            "http://10.0.0.1/assets/ipxe-amd64.efi?mac=52:54:00:00:00:01".into(),
                        )),
                        Some(16),
                        false,
                    ),
                ),
                "UEFI HTTP boot was handed http://10.0.0.1/assets/ipxe-amd64.efi?mac=52:54:00:00:00:01 at",
            ),
            (
                ev(
                    1,
                    EventData::TftpStopped {
                        file: "undionly.kpxe".into(),
                        acked: 65536,
                        size: 70000,
                        why: TftpStop::TimedOut,
                    },
                ),
                "TFTP transfer stopped at 1970-01-01T00:01:00.000Z: undionly.kpxe: stopped after 65536 of 70000 bytes acknowledged: the client stopped acknowledging",
            ),
        ];
        for (e, want) in cases {
            let s = diagnose(&n, &[e], late, &t()).unwrap();
            assert!(s.reason.starts_with(want), "{}", s.reason);
            assert_eq!(s.verdict, NodeState::Failed);
        }
    }

    /// Events stored before events had data are read as notes: their kind
    /// still says whether a boot step happened and when, their text is
    /// never read.
    #[test]
    fn notes_from_before_typed_events_are_steps_by_their_kind() {
        let n = node(NodeState::Booting);
        let late = Timestamp(100 * MIN);
        // The diagnosis, long after the one old event `of` saying `text`.
        let after_note = |of: EventKind, text: &str| {
            let note = EventData::Note {
                of,
                text: text.into(),
            };
            diagnose(&n, &[ev(1, note)], late, &t())
        };
        let s = after_note(EventKind::HttpKernel, "x86_64/vmlinuz").unwrap();
        assert_eq!(
            s.reason,
            "the last boot step was http.kernel at 1970-01-01T00:01:00.000Z, and nothing came after it within 10m"
        );
        assert_eq!(s.verdict, NodeState::Failed);
        // A DHCP answer may have had no boot file: no step.
        let no_boot_file = "10.0.0.9, no boot file (no PXE)";
        assert_eq!(after_note(EventKind::DhcpAck, no_boot_file), None);
        let s = after_note(EventKind::ReportScript, "a.sh exited 0\n").unwrap();
        assert_eq!(s.verdict, NodeState::Unreachable);
        assert!(
            s.reason.contains("its last report (report.script)"),
            "{}",
            s.reason
        );
    }

    #[test]
    fn an_unsigned_uefi_loader_with_nothing_after_it_names_the_secure_boot_way_out() {
        let reason = |file: &str| {
            let sent = Event {
                at: Timestamp(0),
                appliance: None,
                data: EventData::TftpSent {
                    file: file.into(),
                    size: 1,
                },
            };
            diagnose(
                &node(NodeState::Booting),
                &[sent],
                Timestamp(11 * MIN),
                &t(),
            )
            .unwrap()
            .reason
        };
        let r = reason("ipxe-amd64.efi");
        assert!(r.contains("loader = \"grub\""), "{r}");
        let r = reason("shimx64.efi");
        assert!(!r.contains("grub"), "{r}");
    }
}
