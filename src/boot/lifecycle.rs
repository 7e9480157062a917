//! Node state transitions, driven by what the node did. Pure: the caller
//! passes the current state and records the result.

use crate::model::NodeState;

/// Something a node did that moves its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Its boot script was rendered: kernel and initrd are next.
    ScriptRendered,
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
        ];
        for (from, p, want) in table {
            assert_eq!(next_state(from, &p).map(|(s, _)| s), want, "{from} + {p:?}");
        }
        assert_eq!(
            next_state(Configuring, &failed).unwrap().1,
            "script 10-disk.sh exited 3"
        );
    }
}
