//! What happens when an admin (or a rollout) acts on nodes' power: each
//! node's BMC record and password secret are read, its driver built, the
//! action done by the rules of [`crate::bmc::act`] (a PXE-once the BMC did
//! not keep reboots nothing), and the action with its outcome goes on the
//! node's timeline (`power` event) and, for anything but `status`, into the
//! audit log. Several nodes are acted on at once, `[power] parallel` at a
//! time, each bounded by its driver's timeouts.

use futures_util::stream::{self, StreamExt};

use super::Control;
use super::admin::AUDIT_TARGET;
use super::fleet::Nodes;
use crate::bmc::{self, command::Vars};
use crate::model::{EventData, Mac, Node, PowerAction, PowerState};
use crate::store::StoreError;

/// What a power action did to one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PowerDone {
    #[schema(value_type = String)]
    pub mac: Mac,
    pub hostname: String,
    pub action: PowerAction,
    /// Whether the action was done.
    pub ok: bool,
    /// The power before the action, when it could be read.
    pub before: Option<PowerState>,
    /// What was done, or why it was not.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("no node with MAC {0}")]
    NoSuchNode(Mac),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Control {
    /// Does `action` on every node `which` names, for `actor` (an API token,
    /// or a rollout). An unknown MAC among `Macs` refuses them all, before
    /// any BMC is touched. The answers are in the order of the nodes' MACs.
    pub async fn power(
        &self,
        actor: &str,
        action: PowerAction,
        which: Nodes,
    ) -> Result<Vec<PowerDone>, PowerError> {
        let nodes: Vec<Node> = match which {
            Nodes::Selector(selector) => self
                .store
                .nodes()
                .await?
                .into_iter()
                .filter(|n| selector.matches(&n.labels))
                .collect(),
            Nodes::Macs(macs) => {
                let mut nodes = Vec::with_capacity(macs.len());
                for mac in macs {
                    nodes.push(
                        self.store
                            .node(mac)
                            .await?
                            .ok_or(PowerError::NoSuchNode(mac))?,
                    );
                }
                nodes
            }
        };
        let mut done: Vec<PowerDone> = stream::iter(nodes)
            .map(|node| self.power_one(actor, action, node))
            .buffer_unordered(self.power.parallel)
            .collect()
            .await;
        done.sort_by_key(|d| d.mac);
        Ok(done)
    }

    async fn power_one(&self, actor: &str, action: PowerAction, node: Node) -> PowerDone {
        let (bmc_name, result) = match &node.bmc {
            None => (
                "-".to_string(),
                Err("its record has no BMC (set `bmc` on the node)".to_string()),
            ),
            Some(record) => (
                record.summary_short(),
                self.act(&node, record, action).await,
            ),
        };
        let (ok, before, detail) = match result {
            Ok(outcome) => (true, Some(outcome.before), outcome.detail),
            Err(why) => (false, None, why),
        };
        if action.changes_power() || !ok {
            tracing::info!(
                target: AUDIT_TARGET,
                by = actor,
                op = "power",
                action = action.as_str(),
                mac = %node.mac,
                ok,
                "{detail}"
            );
        }
        self.timeline
            .record(
                node.mac,
                EventData::Power {
                    actor: actor.to_string(),
                    action,
                    bmc: bmc_name,
                    before,
                    ok,
                    detail: detail.clone(),
                },
            )
            .await;
        PowerDone {
            mac: node.mac,
            hostname: node.hostname,
            action,
            ok,
            before,
            detail,
        }
    }

    async fn act(
        &self,
        node: &Node,
        record: &crate::model::BmcRecord,
        action: PowerAction,
    ) -> Result<bmc::Outcome, String> {
        let password = match &record.password_secret {
            None => None,
            Some(name) => {
                let text = crate::secrets::read_file(&self.secrets_dir, name)
                    .map_err(|e| format!("the BMC's password: {e}"))?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
        };
        let vars = Vars {
            mac: node.mac.to_string(),
            hostname: node.hostname.clone(),
        };
        let power = bmc::power_of(record, password, self.power.command.as_ref(), vars)
            .map_err(|e| e.to_string())?;
        bmc::act(power.as_ref(), action)
            .await
            .map_err(|e| e.to_string())
    }
}
