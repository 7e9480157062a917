//! What the operational image reports about one config script run: kept
//! durably per node (bounded, oldest dropped first), apart from the timeline.

use serde::Serialize;

use super::Timestamp;

/// One config script's result, as the node reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScriptReport {
    /// When rackboot received the report.
    pub at: Timestamp,
    /// The node's config generation the run was for (see `Node::config_generation`).
    pub generation: u64,
    pub script: String,
    /// The script's exit status (127: it could not be fetched).
    pub status: i32,
    /// How long the script ran, as the node measured it; `None` from an agent
    /// that does not say.
    pub duration_ms: Option<u64>,
    /// The tail of its output (stdout and stderr), bounded by the agent and
    /// again by rackboot.
    pub output: String,
}
