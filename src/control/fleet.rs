//! What the admin API reads and changes: node records and their timelines,
//! leases, script reports, and reconfigures. Changes to node records go
//! through [`super::admin`] (the one protection check, audited); what a
//! change means to a node's boot in flight (its kept script, its boot
//! slot) is settled here.

use std::net::Ipv4Addr;

use super::Control;
use super::admin::Admin;

use crate::model::{Event, LabelSelector, Lease, Mac, Node, ScriptReport};
use crate::store::{REPORTS_PER_NODE, StoreError, StoreHealth};

/// Which nodes a reconfigure names.
pub enum Nodes {
    Selector(LabelSelector),
    /// Sorted, without repeats.
    Macs(Vec<Mac>),
}

/// A node's stored script reports.
pub struct Reports {
    /// Oldest first.
    pub reports: Vec<ScriptReport>,
    /// How many older reports were dropped to keep [`Reports::limit`].
    pub dropped: u64,
    /// How many reports a node keeps.
    pub limit: i64,
}

impl Control {
    pub async fn node(&self, mac: Mac) -> Result<Option<Node>, StoreError> {
        self.store.node(mac).await
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.store.nodes().await
    }

    /// Calls `f` with every node record without copying the fleet
    /// ([`crate::store::Store::visit_nodes`]).
    pub fn visit_nodes(&self, f: &mut dyn FnMut(&Node)) {
        self.store.visit_nodes(f)
    }

    /// The node's timeline, oldest first.
    pub async fn events(&self, mac: Mac) -> Result<Vec<Event>, StoreError> {
        self.store.events(mac).await
    }

    /// The address `mac` holds now: its live bound lease's.
    pub async fn address_of(&self, mac: Mac) -> Result<Option<Ipv4Addr>, StoreError> {
        let now = crate::model::Timestamp::now();
        Ok(self
            .store
            .lease_of(mac)
            .await?
            .filter(|l| l.state == crate::model::LeaseState::Bound && l.is_live(now))
            .map(|l| l.ip))
    }

    /// Every lease the store holds, by address.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.store.leases().await
    }

    /// Calls `f` with each lease of the range `first..=last`, where the
    /// store keeps them (nothing copied): `/metrics`' pool gauges.
    pub fn visit_leases(&self, first: Ipv4Addr, last: Ipv4Addr, f: &mut dyn FnMut(&Lease)) {
        self.store.visit_leases(first, last, f)
    }

    pub fn store_health(&self) -> StoreHealth {
        self.store.health()
    }

    /// Whether this appliance runs the jobs that run once ([`crate::store::Store::leads`]).
    pub fn leads(&self) -> bool {
        self.store.leads()
    }

    /// The node's script reports; `None` for an unknown node.
    pub async fn reports(&self, mac: Mac) -> Result<Option<Reports>, StoreError> {
        if self.store.node(mac).await?.is_none() {
            return Ok(None);
        }
        let (reports, dropped) = self.store.reports(mac).await?;
        Ok(Some(Reports {
            reports,
            dropped,
            limit: REPORTS_PER_NODE,
        }))
    }

    /// Changes to node records, each through the one protection check and
    /// audited; a deleted node's kept script and boot slot go with it
    /// through the store's feed.
    pub fn admin(&self) -> Admin<'_> {
        Admin {
            store: self.store.as_ref(),
            default_bootenv: &self.default_bootenv,
        }
    }
}
