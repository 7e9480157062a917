//! The timeline writer every protocol shares: appends events to a node's
//! bounded timeline and applies the state changes they imply.

use std::sync::Arc;

use crate::boot::{Progress, next_state};
use crate::model::{Event, EventKind, Mac, Timestamp};
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct Timeline {
    store: Arc<dyn Store>,
}

impl Timeline {
    pub fn new(store: Arc<dyn Store>) -> Timeline {
        Timeline { store }
    }

    /// Appends one event. A failure is logged, not returned: losing a
    /// timeline entry must never fail a boot.
    pub async fn record(&self, mac: Mac, kind: EventKind, detail: impl Into<String>) {
        let event = Event {
            at: Timestamp::now(),
            kind,
            detail: detail.into(),
        };
        // Per-packet steps at debug: a rack powering on makes thousands a
        // second, and the timeline (API) is where they are read. State
        // changes stay at info, so the log still tells each node's story.
        if kind == EventKind::State {
            tracing::info!(%mac, event = kind.as_str(), detail = %event.detail);
        } else {
            tracing::debug!(%mac, event = kind.as_str(), detail = %event.detail);
        }
        if let Err(e) = self.store.add_event(mac, &event).await {
            tracing::warn!(%mac, error = %e, "could not record event {kind}");
        }
    }

    /// Applies `progress` to the node's state and records the transition.
    pub async fn progress(&self, mac: Mac, progress: Progress) -> Result<(), StoreError> {
        let Some(node) = self.store.node(mac).await? else {
            return Err(StoreError::NoSuchNode(mac));
        };
        if let Some((state, why)) = next_state(node.state, &progress) {
            self.store.set_node_state(mac, state, Some(&why)).await?;
            self.record(
                mac,
                EventKind::State,
                format!("{} -> {state}: {why}", node.state),
            )
            .await;
        }
        Ok(())
    }
}
