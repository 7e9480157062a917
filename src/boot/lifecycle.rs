//! Node lifecycle, pure: which bootenv a node boots right now (its bootenv,
//! or a next-boot bootenv used once or leased until a time), how that
//! changes by itself, and the state transitions driven by what the node did.
//! The caller passes the record and `now`, applies the result inside one
//! store edit and puts the cause on the node's timeline.

use crate::model::{BootenvCause, BootenvFields, EventData, Node, NodeState, Timestamp};

// ---------------------------------------------------------------------------------------------
// Which bootenv a node boots

pub use crate::model::Choice;

/// The bootenv a node boots at some moment, and why that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub bootenv: String,
    pub choice: Choice,
}

/// The bootenv `node` boots at `now`: its next-boot bootenv while that is in
/// force (once, or until its lease runs out), else its bootenv. An expired
/// lease counts as gone even before [`expire_lease`] has cleared it.
pub fn effective_bootenv(node: &Node, now: Timestamp) -> Effective {
    match (&node.next_bootenv, node.bootenv_expires) {
        (Some(next), None) => Effective {
            bootenv: next.clone(),
            choice: Choice::Once,
        },
        (Some(next), Some(until)) if now < until => Effective {
            bootenv: next.clone(),
            choice: Choice::Lease { until },
        },
        _ => Effective {
            bootenv: node.bootenv.clone(),
            choice: Choice::Base,
        },
    }
}

/// A change lifecycle makes to a node's bootenv fields by itself, and its
/// cause, for the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootenvChange {
    pub bootenv: String,
    pub next_bootenv: Option<String>,
    pub bootenv_expires: Option<Timestamp>,
    pub cause: BootenvCause,
}

impl BootenvChange {
    pub fn apply(&self, node: &mut Node) {
        node.bootenv = self.bootenv.clone();
        node.next_bootenv = self.next_bootenv.clone();
        node.bootenv_expires = self.bootenv_expires;
    }

    /// The `bootenv.changed` event: what the record said before and after, and why.
    pub fn event(&self, before: &Node) -> EventData {
        EventData::BootenvChanged {
            from: bootenv_fields(before),
            to: BootenvFields {
                bootenv: self.bootenv.clone(),
                next_bootenv: self.next_bootenv.clone(),
                bootenv_expires: self.bootenv_expires,
            },
            cause: self.cause.clone(),
        }
    }
}

/// The record's bootenv fields, as the timeline shows them.
pub fn bootenv_fields(node: &Node) -> BootenvFields {
    BootenvFields {
        bootenv: node.bootenv.clone(),
        next_bootenv: node.next_bootenv.clone(),
        bootenv_expires: node.bootenv_expires,
    }
}

/// A lease that has run out at `now` reverts the node to its bootenv.
pub fn expire_lease(node: &Node, now: Timestamp) -> Option<BootenvChange> {
    let until = node.bootenv_expires?;
    if now < until {
        return None;
    }
    let cause = match &node.next_bootenv {
        Some(next) => BootenvCause::LeaseRanOut {
            next: next.clone(),
            until,
        },
        None => BootenvCause::ExpiryCleared { until },
    };
    Some(BootenvChange {
        bootenv: node.bootenv.clone(),
        next_bootenv: None,
        bootenv_expires: None,
        cause,
    })
}

/// After the boot script of `rendered` went out: a once-only next-boot
/// bootenv is used up. Nothing changes when the record no longer says
/// `rendered` once (an admin changed it in between).
pub fn after_render(node: &Node, rendered: &str, now: Timestamp) -> Option<BootenvChange> {
    let e = effective_bootenv(node, now);
    (e.choice == Choice::Once && e.bootenv == rendered).then(|| BootenvChange {
        bootenv: node.bootenv.clone(),
        next_bootenv: None,
        bootenv_expires: None,
        cause: BootenvCause::BootedOnce {
            bootenv: rendered.to_string(),
        },
    })
}

/// The installer of `installer` called back: from now on the node boots
/// `after_install`, and no next-boot bootenv (a lease on the installer
/// included), so its next boot never loops into the installer.
pub fn install_complete(installer: &str, after_install: &str) -> BootenvChange {
    BootenvChange {
        bootenv: after_install.to_string(),
        next_bootenv: None,
        bootenv_expires: None,
        cause: BootenvCause::Installed {
            installer: installer.to_string(),
            after_install: after_install.to_string(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// States

/// Something a node did that moves its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Its boot script was rendered: kernel and initrd are next.
    ScriptRendered,
    /// The boot script of a bootenv marked `installer` was rendered.
    InstallerRendered,
    /// It was sent to its own disk (bootenv `local`): its state stays what
    /// its last install or configuration left.
    LocalRendered,
    /// The operational image reported in.
    Booted,
    /// It pulled its config scripts.
    ConfigPulled,
    /// Every config script succeeded.
    Configured,
    /// Something failed; the reason is kept.
    Failed { reason: String },
}

/// The state after `progress`, and why, or `None` when nothing changes.
///
/// Any step may come from any state: a node can be power-cycled at any
/// moment, and what it does next is the truth about where it is.
pub fn next_state(current: NodeState, progress: &Progress) -> Option<(NodeState, String)> {
    let (next, why) = match progress {
        Progress::ScriptRendered => (NodeState::Booting, "boot script rendered".to_string()),
        Progress::InstallerRendered => (
            NodeState::Installing,
            "installer boot script rendered".to_string(),
        ),
        Progress::LocalRendered => return None,
        Progress::Booted => (NodeState::Booted, "operational image reported".to_string()),
        Progress::ConfigPulled => (NodeState::Configuring, "config scripts pulled".to_string()),
        Progress::Configured => (
            NodeState::Configured,
            "all config scripts succeeded".to_string(),
        ),
        Progress::Failed { reason } => (NodeState::Failed, reason.clone()),
    };
    // Repeating a failure keeps its (possibly new) reason.
    (next != current || next == NodeState::Failed).then_some((next, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` with the change `c` applied.
    fn applied(c: &BootenvChange, n: &Node) -> Node {
        let mut after = n.clone();
        c.apply(&mut after);
        after
    }

    /// The bootenv fields a change sets.
    fn bootenv_fields(n: &Node) -> (&str, Option<String>, Option<Timestamp>) {
        (
            n.bootenv.as_str(),
            n.next_bootenv.clone(),
            n.bootenv_expires,
        )
    }

    #[test]
    fn transition_table() {
        use NodeState::*;
        let failed = Progress::Failed {
            reason: "script 10-disk.sh exited 3".into(),
        };
        let table = [
            (Discovered, Progress::ScriptRendered, Some(Booting)),
            (Booting, Progress::Booted, Some(Booted)),
            (Booted, Progress::ConfigPulled, Some(Configuring)),
            (Configuring, Progress::Configured, Some(Configured)),
            (Configuring, failed.clone(), Some(Failed)),
            (Failed, failed.clone(), Some(Failed)),
            (Configured, Progress::ScriptRendered, Some(Booting)),
            (Failed, Progress::ScriptRendered, Some(Booting)),
            (Booting, Progress::ScriptRendered, None),
            (Configured, Progress::Configured, None),
            (Discovered, Progress::InstallerRendered, Some(Installing)),
            (Configured, Progress::InstallerRendered, Some(Installing)),
            (Installed, Progress::LocalRendered, None),
            (Configured, Progress::LocalRendered, None),
            (Installing, Progress::InstallerRendered, None),
        ];
        for (from, p, want) in table {
            assert_eq!(next_state(from, &p).map(|(s, _)| s), want, "{from} + {p:?}");
        }
        assert_eq!(
            next_state(Configuring, &failed).unwrap().1,
            "script 10-disk.sh exited 3"
        );
    }

    fn node(bootenv: &str, next: Option<&str>, expires: Option<i64>) -> Node {
        let mut n = Node::discovered(
            "52:54:00:00:00:01".parse().unwrap(),
            bootenv,
            "t".into(),
            Timestamp(0),
        );
        n.next_bootenv = next.map(str::to_string);
        n.bootenv_expires = expires.map(Timestamp);
        n
    }

    /// The fields as the API sets them: plain (bootenv), once (next, no
    /// expiry), for (next, expiry); then the bootenv at several moments.
    #[test]
    fn effective_bootenv_table() {
        let h = 3_600_000;
        let table = [
            // bootenv, next, expires, now, effective, choice
            ("discovery", None, None, 0, "discovery", Choice::Base),
            ("local", Some("rescue"), None, 0, "rescue", Choice::Once),
            (
                "local",
                Some("rescue"),
                None,
                100 * h,
                "rescue",
                Choice::Once,
            ),
            (
                "local",
                Some("install"),
                Some(2 * h),
                h,
                "install",
                Choice::Lease {
                    until: Timestamp(2 * h),
                },
            ),
            (
                "local",
                Some("install"),
                Some(2 * h),
                2 * h,
                "local",
                Choice::Base,
            ),
            (
                "local",
                Some("install"),
                Some(2 * h),
                3 * h,
                "local",
                Choice::Base,
            ),
            ("local", None, Some(2 * h), h, "local", Choice::Base),
        ];
        for (bootenv, next, expires, now, want, choice) in table {
            let n = node(bootenv, next, expires);
            let e = effective_bootenv(&n, Timestamp(now));
            assert_eq!(
                (e.bootenv.as_str(), e.choice),
                (want, choice),
                "{bootenv} {next:?} {expires:?} at {now}"
            );
        }
    }

    #[test]
    fn once_is_used_up_by_its_render_only() {
        let n = node("discovery", Some("rescue"), None);
        let now = Timestamp(5);
        let c = after_render(&n, "rescue", now).expect("used up");
        let after = applied(&c, &n);
        assert_eq!(bootenv_fields(&after), ("discovery", None, None));
        assert_eq!(effective_bootenv(&after, now).bootenv, "discovery");
        assert_eq!(
            c.event(&n).to_string(),
            "rescue once, then discovery -> discovery: rescue was booted once"
        );
        // The record changed between render and edit: leave it alone.
        assert_eq!(after_render(&n, "discovery", now), None);
        assert_eq!(after_render(&after, "rescue", now), None);
        // A lease or a plain bootenv is not used up by a boot.
        assert_eq!(
            after_render(&node("local", Some("x"), Some(10)), "x", now),
            None
        );
        assert_eq!(after_render(&node("x", None, None), "x", now), None);
    }

    #[test]
    fn leases_revert_when_they_run_out() {
        let n = node("local", Some("install"), Some(1000));
        assert_eq!(expire_lease(&n, Timestamp(999)), None);
        for now in [1000, 5000] {
            let c = expire_lease(&n, Timestamp(now)).expect("expired");
            let after = applied(&c, &n);
            assert_eq!(bootenv_fields(&after), ("local", None, None));
            assert!(
                c.cause.to_string().contains("lease on install ran out"),
                "{}",
                c.cause
            );
        }
        assert_eq!(
            expire_lease(&node("local", Some("x"), None), Timestamp(9)),
            None
        );
        assert_eq!(expire_lease(&node("local", None, None), Timestamp(9)), None);
        // A stray expiry is cleared too.
        assert!(expire_lease(&node("local", None, Some(1)), Timestamp(9)).is_some());
        let before = node("local", Some("install"), Some(1000));
        let c = expire_lease(&before, Timestamp(1000)).map(|c| c.event(&before).to_string());
        assert_eq!(
            c.as_deref(),
            Some(
                "install until 1970-01-01T00:00:01.000Z, then local -> local: the lease on install ran out at 1970-01-01T00:00:01.000Z"
            )
        );
    }

    #[test]
    fn an_install_ends_on_after_install_with_no_next_bootenv() {
        for n in [
            node("install", None, None),
            node("discovery", Some("install"), Some(10_000)),
        ] {
            let c = install_complete("install", "local");
            let after = applied(&c, &n);
            assert_eq!(bootenv_fields(&after), ("local", None, None));
            assert_eq!(effective_bootenv(&after, Timestamp(1)).bootenv, "local");
        }
    }
}
