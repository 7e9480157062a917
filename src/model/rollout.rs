//! A rollout: a bootenv taken across the nodes a selector names, a few at a
//! time, each node drained, rebooted into the bootenv through its BMC,
//! waited for, and put back; canaries first. The record is the whole truth
//! of a rollout (what was asked, where each node is), kept in the store and
//! written at every step, so a restarted rackboot (or, on PostgreSQL,
//! another appliance) goes on from where it was. What runs it is
//! `control::rollout`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{BootenvFields, Mac, Timestamp};

/// How many nodes may be out of service at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    Nodes(u32),
    /// Of the nodes the selector names, rounded down but at least one.
    Percent(u32),
}

impl Budget {
    /// The number of nodes for a fleet of `fleet`.
    pub fn of(self, fleet: usize) -> usize {
        match self {
            Budget::Nodes(n) => n as usize,
            Budget::Percent(p) => (fleet * p as usize / 100).max(1),
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Nodes(n) => write!(f, "{n}"),
            Budget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for Budget {
    type Err = String;
    /// `3` or `10%`.
    fn from_str(s: &str) -> Result<Budget, String> {
        let bad = || format!("`{s}` is not a node count (3) or a share of the fleet (10%)");
        let b = match s.trim().strip_suffix('%') {
            Some(p) => Budget::Percent(p.trim().parse().map_err(|_| bad())?),
            None => Budget::Nodes(s.trim().parse().map_err(|_| bad())?),
        };
        match b {
            Budget::Nodes(0) | Budget::Percent(0) => Err(format!("`{s}`: at least one node")),
            Budget::Percent(p) if p > 100 => Err(format!("`{s}`: at most 100%")),
            b => Ok(b),
        }
    }
}

/// A drain or undrain hook: a command the configuration names
/// (`[rollout.hooks]`), or a URL that is POSTed the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// The name of a command in `[rollout.hooks]`.
    Command(String),
    Url(String),
}

impl Hook {
    /// A URL (`http://`, `https://`) or the name of a configured command.
    pub fn parse(s: &str) -> Hook {
        if s.starts_with("http://") || s.starts_with("https://") {
            Hook::Url(s.to_string())
        } else {
            Hook::Command(s.to_string())
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Command(name) => write!(f, "hook `{name}`"),
            Hook::Url(url) => write!(f, "POST {url}"),
        }
    }
}

/// What a rollout was asked to do (fixed once it starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutSpec {
    /// The label selector naming the fleet.
    pub selector: String,
    pub bootenv: String,
    /// Boot the bootenv for this long (ms) instead of once.
    pub bootenv_for_ms: Option<u64>,
    /// How many nodes go first, alone; the rest wait until they succeeded.
    pub canary: u32,
    pub max_unavailable: Budget,
    /// Failed nodes (canaries aside) at which the rollout pauses itself.
    pub max_failed: u32,
    pub drain: Option<Hook>,
    pub undrain: Option<Hook>,
    /// How long a hook may run (ms).
    pub hook_timeout_ms: u64,
    /// How long a node may take from its reboot to `installed` or
    /// `configured` (ms).
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    /// Paused by an admin or by itself (why). Nodes in flight finish their
    /// step; no node starts.
    Paused {
        reason: String,
    },
    /// Every node is done, failed or skipped.
    Done,
    /// Stopped for good by an admin: no node starts or moves on.
    Aborted {
        reason: String,
    },
}

impl RolloutState {
    pub fn is_over(&self) -> bool {
        matches!(self, RolloutState::Done | RolloutState::Aborted { .. })
    }
}

/// Where one node of a rollout is. Each step is recorded before it is
/// taken, so after a restart a node is found at the step it was in and the
/// step is taken again (hooks must bear running twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Draining,
    /// Its bootenv is being set and its machine power-cycled into PXE.
    Rebooting,
    /// Power-cycled at `since`: waiting for `installed` or `configured`.
    Installing {
        since: Timestamp,
    },
    Undraining,
    Done,
    /// Reverted to its previous bootenv; why.
    Failed {
        reason: String,
    },
    /// Never touched; why (protected, gone, no BMC).
    Skipped {
        reason: String,
    },
}

impl Phase {
    /// Out of service because of the rollout.
    pub fn in_flight(&self) -> bool {
        matches!(
            self,
            Phase::Draining | Phase::Rebooting | Phase::Installing { .. } | Phase::Undraining
        )
    }
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Draining => "draining",
            Phase::Rebooting => "rebooting",
            Phase::Installing { .. } => "installing",
            Phase::Undraining => "undraining",
            Phase::Done => "done",
            Phase::Failed { .. } => "failed",
            Phase::Skipped { .. } => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutNode {
    #[schema(value_type = String)]
    pub mac: Mac,
    pub hostname: String,
    pub canary: bool,
    #[serde(flatten)]
    pub phase: Phase,
    /// What it booted before the rollout, restored if it fails.
    pub previous: Option<BootenvFields>,
    /// When its phase last changed.
    pub changed: Timestamp,
    /// Power cycles taken again because a boot was lost (see
    /// `NodeDriver::wait`); bounded, so a machine that keeps losing its
    /// boot fails at its deadline instead of cycling forever.
    #[serde(default)]
    pub recycled: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollout {
    /// `r-<n>`, unique in the store.
    pub id: String,
    pub spec: RolloutSpec,
    #[serde(flatten)]
    pub state: RolloutState,
    /// Who started it (an API token).
    pub actor: String,
    pub created: Timestamp,
    /// Nodes that failed since the last start or resume (what `max_failed`
    /// counts; canaries pause the rollout on their own).
    pub failed_since_resume: u32,
    /// Canaries first, then the rest, each in MAC order.
    pub nodes: Vec<RolloutNode>,
    /// Why no node starts although some are pending (the budget is used,
    /// the canaries are not done): worked out when the rollout is shown,
    /// never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl Rollout {
    pub fn node_mut(&mut self, mac: Mac) -> Option<&mut RolloutNode> {
        self.nodes.iter_mut().find(|n| n.mac == mac)
    }

    /// How many pending nodes may start now, given the fleet's nodes that
    /// are out of service for reasons of their own (`down`: hostname and
    /// state, none of them in flight here); or why none may, when some are
    /// pending.
    pub fn room(&self, down: &[(String, String)]) -> Result<usize, String> {
        let in_flight = self.nodes.iter().filter(|n| n.phase.in_flight()).count();
        let budget = self.spec.max_unavailable.of(self.nodes.len());
        let used = in_flight + down.len();
        if used >= budget {
            let mut why = format!(
                "max-unavailable {} ({budget} of {}) is used: {in_flight} in this rollout",
                self.spec.max_unavailable,
                self.nodes.len()
            );
            if !down.is_empty() {
                let named: Vec<String> = down.iter().map(|(h, s)| format!("{h} {s}")).collect();
                why.push_str(&format!(
                    ", {} down for other reasons ({})",
                    down.len(),
                    named.join(", ")
                ));
            }
            return Err(why);
        }
        let canaries_done = self.canaries_done();
        let startable = self
            .nodes
            .iter()
            .any(|n| n.phase == Phase::Pending && (n.canary || canaries_done));
        if !startable {
            let waiting_on: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.canary && n.phase != Phase::Done)
                .map(|n| n.hostname.as_str())
                .collect();
            return Err(format!(
                "the rest start when every canary is done; not yet: {}",
                waiting_on.join(", ")
            ));
        }
        Ok(budget - used)
    }

    /// Whether every canary is done (trivially, with none).
    pub fn canaries_done(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.canary)
            .all(|n| n.phase == Phase::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(max_unavailable: Budget, phases: &[(bool, Phase)]) -> Rollout {
        Rollout {
            id: "r-1".into(),
            spec: RolloutSpec {
                selector: "role=builder".into(),
                bootenv: "install".into(),
                bootenv_for_ms: None,
                canary: 1,
                max_unavailable,
                max_failed: 1,
                drain: None,
                undrain: None,
                hook_timeout_ms: 1,
                deadline_ms: 1,
            },
            state: RolloutState::Running,
            actor: "t".into(),
            created: Timestamp(0),
            failed_since_resume: 0,
            nodes: phases
                .iter()
                .enumerate()
                .map(|(i, (canary, phase))| RolloutNode {
                    mac: Mac::new([2, 0, 0, 0, 0, i as u8]),
                    hostname: format!("b{}", i + 1),
                    canary: *canary,
                    phase: phase.clone(),
                    previous: None,
                    changed: Timestamp(0),
                    recycled: 0,
                })
                .collect(),
            waiting: None,
        }
    }

    #[test]
    fn room_is_the_budget_left_and_says_why_there_is_none() {
        let installing = Phase::Installing {
            since: Timestamp(0),
        };
        // Canary done, one in flight, budget 2: one more may start.
        let r = rollout(
            Budget::Nodes(2),
            &[
                (true, Phase::Done),
                (false, installing.clone()),
                (false, Phase::Pending),
            ],
        );
        assert_eq!(r.room(&[]), Ok(1));
        // A node of the fleet down for its own reasons uses the rest.
        let down = [("b9".to_string(), "failed".to_string())];
        assert_eq!(
            r.room(&down),
            Err("max-unavailable 2 (2 of 3) is used: 1 in this rollout, 1 down for other reasons (b9 failed)".into())
        );
        // The canary in flight: the rest wait for it, budget or not.
        let r = rollout(
            Budget::Percent(100),
            &[(true, installing), (false, Phase::Pending)],
        );
        assert_eq!(
            r.room(&[]),
            Err("the rest start when every canary is done; not yet: b1".into())
        );
    }
}
