//! The timeline writer every protocol shares: appends events to a node's
//! bounded timeline and applies the state and bootenv changes they imply.
//!
//! A change that depends on the record (a once-only bootenv used up, a
//! lease run out, a stall turned into `failed`) is decided on the record as
//! read, then written by an edit that applies it only if the fields it was
//! decided on are still what was read; otherwise it is decided again on the
//! record as it is now. So an admin's edit in between is never overwritten
//! with a stale view, and the event says exactly what changed.

use std::sync::Arc;

use crate::boot::{BootenvChange, Progress, next_state};
use crate::model::{Event, EventData, EventKind, Mac, Node, NodeState, Timestamp};
use crate::store::{Store, StoreError};

/// How often a decided change is decided again when the record keeps
/// changing under it before giving up with [`StoreError::Conflict`].
const ATTEMPTS: usize = 8;

#[derive(Clone)]
pub struct Timeline {
    store: Arc<dyn Store>,
}

/// Whether the fields lifecycle decides on are the same in both records:
/// the state and the bootenv fields.
fn same_lifecycle(a: &Node, b: &Node) -> bool {
    a.state == b.state
        && a.bootenv == b.bootenv
        && a.next_bootenv == b.next_bootenv
        && a.bootenv_expires == b.bootenv_expires
}

impl Timeline {
    pub fn new(store: Arc<dyn Store>) -> Timeline {
        Timeline { store }
    }

    /// Appends one event. A failure is logged, not returned: losing a
    /// timeline entry must never fail a boot.
    pub async fn record(&self, mac: Mac, data: EventData) {
        let event = Event::new(Timestamp::now(), data);
        let kind = event.kind();
        // Per-packet steps at debug: a rack powering on makes thousands a
        // second, and the timeline (API) is where they are read. State
        // changes stay at info, so the log still tells each node's story.
        // (The sentence is rendered only when the line is logged.)
        if kind == EventKind::State {
            tracing::info!(%mac, event = kind.as_str(), detail = %event);
        } else {
            tracing::debug!(%mac, event = kind.as_str(), detail = %event);
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
            self.record(mac, EventData::moved(node.state, state, why))
                .await;
        }
        Ok(())
    }

    /// Decides on the record as read, and writes the decision in one atomic
    /// edit only if, on the record as it is then, `decide` decides the same
    /// and the lifecycle fields are those it was decided on
    /// ([`same_lifecycle`]); else decides again on the record as it is
    /// now. Returns the record before and after, and the decision; `None`
    /// when `decide` had nothing to do.
    async fn edit_decided<T, D, A>(
        &self,
        mac: Mac,
        decide: D,
        apply: A,
    ) -> Result<Option<(Node, T, Node)>, StoreError>
    where
        T: Clone + PartialEq + Send + 'static,
        D: Fn(&Node) -> Option<T> + Clone + Send + 'static,
        A: Fn(&T, &mut Node) + Clone + Send + 'static,
    {
        for _ in 0..ATTEMPTS {
            let Some(before) = self.store.node(mac).await? else {
                return Err(StoreError::NoSuchNode(mac));
            };
            let Some(decided) = decide(&before) else {
                return Ok(None);
            };
            let (seen, change) = (before.clone(), decided.clone());
            let (decide, apply) = (decide.clone(), apply.clone());
            let edited = self
                .store
                .update_node(
                    mac,
                    Box::new(move |n| {
                        if !same_lifecycle(n, &seen) || decide(n).as_ref() != Some(&change) {
                            return Err("the record changed since it was read".into());
                        }
                        apply(&change, n);
                        Ok(())
                    }),
                )
                .await;
            match edited {
                Ok(edited) => return Ok(Some((before, decided, edited.after))),
                // Changed in between: decide again on the record as it is now.
                Err(StoreError::Refused(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "the record of {mac} kept changing while a lifecycle change was written; the next request or sweep tries again"
        )))
    }

    /// Applies the bootenv change `plan` computes from the record (in one
    /// atomic store edit that a concurrent admin edit cannot fall into) and
    /// records it as `bootenv.changed` with its cause. Returns the record
    /// after, or `None` when `plan` had nothing to change.
    pub async fn change_bootenv(
        &self,
        mac: Mac,
        plan: impl Fn(&Node) -> Option<BootenvChange> + Clone + Send + 'static,
    ) -> Result<Option<Node>, StoreError> {
        let Some((before, change, after)) = self
            .edit_decided(mac, plan, |c: &BootenvChange, n| c.apply(n))
            .await?
        else {
            return Ok(None);
        };
        self.record(mac, change.event(&before)).await;
        Ok(Some(after))
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
        still: impl Fn(&Node) -> bool + Clone + Send + 'static,
    ) -> Result<bool, StoreError> {
        let why = reason.clone();
        let edited = self
            .edit_decided(
                mac,
                move |n| still(n).then_some(()),
                move |_: &(), n| {
                    n.state = state;
                    n.state_reason = Some(why.clone());
                },
            )
            .await?;
        let Some((before, (), _)) = edited else {
            return Ok(false);
        };
        self.record(mac, EventData::moved(before.state, state, reason))
            .await;
        Ok(true)
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
        let reason = format!("the installer called back ({what})");
        let why = reason.clone();
        let edited = self
            .edit_decided(
                mac,
                move |_| Some(change.clone()),
                move |c: &BootenvChange, n| {
                    c.apply(n);
                    n.state = NodeState::Installed;
                    n.state_reason = Some(why.clone());
                },
            )
            .await?;
        let Some((before, change, _)) = edited else {
            return Ok(());
        };
        self.record(
            mac,
            EventData::moved(before.state, NodeState::Installed, reason),
        )
        .await;
        self.record(mac, change.event(&before)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::lifecycle;
    use crate::store::SqliteStore;

    fn mac() -> Mac {
        "52:54:00:00:00:01".parse().unwrap()
    }

    /// A store holding one discovered node, `edit`ed first, and its timeline.
    async fn one_node(edit: impl FnOnce(&mut Node)) -> (Arc<dyn Store>, Timeline) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let mut n = Node::discovered(mac(), "discovery", "t".into(), Timestamp(0));
        edit(&mut n);
        store.create_node_if_absent(n).await.unwrap();
        (store.clone(), Timeline::new(store))
    }

    /// An admin's edit that lands between the read and the write is not
    /// overwritten: the change is decided again on the record as it is then.
    #[tokio::test]
    async fn a_change_is_decided_again_on_a_record_edited_meanwhile() {
        let (store, timeline) = one_node(|n| n.next_bootenv = Some("rescue".into())).await;
        let raced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = store.clone();
        let after = timeline
            .change_bootenv(mac(), move |n| {
                // The first decision is made on the record before an admin's
                // edit (a new next-boot bootenv) is written.
                if !raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        tokio::runtime::Runtime::new().unwrap().block_on(async {
                            s.update_node(
                                mac(),
                                Box::new(|n| {
                                    n.next_bootenv = Some("install".into());
                                    Ok(())
                                }),
                            )
                            .await
                            .unwrap()
                        })
                    })
                    .join()
                    .unwrap();
                }
                lifecycle::after_render(n, "rescue", Timestamp(1))
            })
            .await
            .unwrap();
        // Decided again: `install` once is not the `rescue` that was booted.
        assert_eq!(after, None);
        let n = store.node(mac()).await.unwrap().unwrap();
        assert_eq!(n.next_bootenv.as_deref(), Some("install"));
        assert!(store.events(mac()).await.unwrap().is_empty());

        // Undisturbed, the change is made and recorded from the record read.
        let after = timeline
            .change_bootenv(mac(), |n| {
                lifecycle::after_render(n, "install", Timestamp(2))
            })
            .await
            .unwrap()
            .expect("used up");
        assert_eq!(after.next_bootenv, None);
        let events = store.events(mac()).await.unwrap();
        assert_eq!(
            events[0].sentence(),
            "install once, then discovery -> discovery: install was booted once"
        );
    }

    #[tokio::test]
    async fn a_state_is_set_only_while_the_record_still_qualifies() {
        let (store, timeline) = one_node(|n| n.state = NodeState::Unreachable).await;
        let set = |still: NodeState| {
            timeline.set_state_if(mac(), NodeState::Configured, "back".into(), move |n| {
                n.state == still
            })
        };
        assert!(!set(NodeState::Booting).await.unwrap());
        assert!(set(NodeState::Unreachable).await.unwrap());
        let n = store.node(mac()).await.unwrap().unwrap();
        assert_eq!(
            (n.state, n.state_reason.as_deref()),
            (NodeState::Configured, Some("back"))
        );
        let events = store.events(mac()).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].sentence(), "unreachable -> configured: back");
    }

    /// What the decision rests on is checked again inside the edit, also
    /// when it is no lifecycle field: a node seen between the sweep's look
    /// and its edit is not marked stalled.
    #[tokio::test]
    async fn a_node_seen_meanwhile_is_left_alone() {
        let (store, timeline) = one_node(|n| n.state = NodeState::Booting).await;
        let raced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = store.clone();
        let set = timeline
            .set_state_if(mac(), NodeState::Failed, "stalled".into(), move |n| {
                if !raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        tokio::runtime::Runtime::new()
                            .unwrap()
                            .block_on(s.touch_node(mac(), None, Timestamp(5)))
                            .unwrap()
                    })
                    .join()
                    .unwrap();
                }
                n.last_seen == Some(Timestamp(0))
            })
            .await
            .unwrap();
        assert!(!set);
        let n = store.node(mac()).await.unwrap().unwrap();
        assert_eq!(
            (n.state, n.last_seen),
            (NodeState::Booting, Some(Timestamp(5)))
        );
        assert!(store.events(mac()).await.unwrap().is_empty());
    }
}
