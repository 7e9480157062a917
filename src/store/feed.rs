//! The changes a store makes, as one feed: every node record and lease put
//! in or taken out, and every reconfigure, in the order they were made.
//!
//! What is kept in memory beside the store learns of changes here and
//! nowhere else: the name table DNS answers from ([`crate::names`]), the
//! boot scripts kept per node, the agents' waits for a reconfigure, the
//! boot slots. The engine knows none of them, only [`Feed`]; a second
//! appliance's changes (through a networked engine) reach the same
//! subscribers the same way.
//!
//! A change is delivered while the engine still holds what it changed, so
//! a subscriber is never behind the store (DNS never answers a name the
//! store no longer has). So a subscriber only updates memory: it never
//! waits, and never calls back into the store.

use std::net::Ipv4Addr;
use std::sync::{Arc, PoisonError, RwLock};

use crate::model::{Lease, Mac, Node, Timestamp};

/// One change the store made.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A node record put in: made, edited, or read at open.
    Node(&'a Node),
    /// The node record of this MAC taken out.
    NodeGone(Mac),
    /// A lease put in (offered, bound, declined, released...).
    Lease(&'a Lease),
    /// The lease of this address taken out.
    LeaseGone(Ipv4Addr),
    /// These nodes' config generation moved on: their agents run their
    /// config scripts again.
    ConfigBumped(&'a [Mac]),
    /// An event added to this node's timeline (by this appliance), and
    /// when it happened: a read of the timeline made after this sees it.
    /// For what shows timelines live (the console) and what waits for the
    /// next step of a boot (the lifecycle sweep).
    Event(Mac, Timestamp),
    /// What came before is the store's contents when the subscriber joined
    /// (its snapshot), not changes since.
    Loaded,
}

/// What learns of a store's changes.
pub trait Subscriber: Send + Sync {
    fn changed(&self, change: &Change<'_>);
}

/// The subscribers of one store. The engine calls [`Feed::emit`] for each
/// change, while it holds what changed.
#[derive(Default)]
pub struct Feed {
    subscribers: RwLock<Vec<Arc<dyn Subscriber>>>,
}

impl Feed {
    pub fn emit(&self, change: &Change<'_>) {
        let subscribers = self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for s in subscribers.iter() {
            s.changed(change);
        }
    }

    /// Adds `s`; the engine has given it its snapshot first (under the same
    /// hold, so no change falls between the two).
    pub fn add(&self, s: Arc<dyn Subscriber>) {
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(s);
    }
}
