//! The timeline writer every protocol shares: appends events to a node's
//! bounded timeline and applies the state changes they imply.

use std::sync::{Arc, Mutex, PoisonError};

use crate::boot::{BootenvChange, Progress, next_state};
use crate::model::{Event, EventKind, Mac, Node, NodeState, Timestamp};
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

    /// Applies the bootenv change `plan` computes from the record as it is
    /// inside one atomic store edit (so a concurrent admin edit is never
    /// overwritten with a stale view), and records it as `bootenv.changed`
    /// with its cause. Returns the record after, or `None` when `plan` had
    /// nothing to change.
    pub async fn change_bootenv(
        &self,
        mac: Mac,
        plan: impl FnOnce(&Node) -> Option<BootenvChange> + Send + 'static,
    ) -> Result<Option<Node>, StoreError> {
        let detail = Arc::new(Mutex::new(None));
        let out = detail.clone();
        let edited = self
            .store
            .update_node(
                mac,
                Box::new(move |n| {
                    let change = plan(n).ok_or_else(|| "no change".to_string())?;
                    let text = change.detail(n);
                    change.apply(n);
                    *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(text);
                    Ok(())
                }),
            )
            .await;
        let detail = detail.lock().unwrap_or_else(PoisonError::into_inner).take();
        match (edited, detail) {
            (Ok(edited), Some(detail)) => {
                self.record(mac, EventKind::BootenvChanged, detail).await;
                Ok(Some(edited.after))
            }
            (Err(StoreError::Refused(_)), None) => Ok(None),
            (Ok(edited), None) => Ok(Some(edited.after)),
            (Err(e), _) => Err(e),
        }
    }

    /// Sets the node's state with `reason` in one atomic edit, only if
    /// `still` holds for the record as it is then (the node may have moved
    /// on since it was looked at), and records the transition. Returns
    /// whether it changed.
    pub async fn set_state_if(
        &self,
        mac: Mac,
        state: NodeState,
        reason: String,
        still: impl FnOnce(&Node) -> bool + Send + 'static,
    ) -> Result<bool, StoreError> {
        let from = Arc::new(Mutex::new(None));
        let out = from.clone();
        let why = reason.clone();
        let edited = self
            .store
            .update_node(
                mac,
                Box::new(move |n| {
                    if !still(n) {
                        return Err("the node moved on".into());
                    }
                    *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(n.state);
                    n.state = state;
                    n.state_reason = Some(why);
                    Ok(())
                }),
            )
            .await;
        let from = from.lock().unwrap_or_else(PoisonError::into_inner).take();
        match (edited, from) {
            (Ok(_), Some(from)) => {
                self.record(
                    mac,
                    EventKind::State,
                    format!("{from} -> {state}: {reason}"),
                )
                .await;
                Ok(true)
            }
            (Err(StoreError::Refused(_)), None) => Ok(false),
            (Ok(_), None) => Ok(false),
            (Err(e), _) => Err(e),
        }
    }

    /// The install-complete callback's edit: the bootenv change and the
    /// state `installed` in one atomic store edit (a boot starting meanwhile
    /// sees both or neither), then both on the timeline.
    pub async fn complete_install(
        &self,
        mac: Mac,
        change: BootenvChange,
        what: String,
    ) -> Result<(), StoreError> {
        let before = Arc::new(Mutex::new(None));
        let out = before.clone();
        let ch = change.clone();
        let reason = format!("the installer called back ({what})");
        let why = reason.clone();
        self.store
            .update_node(
                mac,
                Box::new(move |n| {
                    *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(n.clone());
                    ch.apply(n);
                    n.state = NodeState::Installed;
                    n.state_reason = Some(why);
                    Ok(())
                }),
            )
            .await?;
        let Some(before) = before.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(());
        };
        self.record(
            mac,
            EventKind::State,
            format!("{} -> {}: {reason}", before.state, NodeState::Installed),
        )
        .await;
        self.record(mac, EventKind::BootenvChanged, change.detail(&before))
            .await;
        Ok(())
    }
}
