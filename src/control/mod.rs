//! The code that calls the store and policy together, so that a rule is
//! enforced in one place whichever protocol or endpoint asks. A protocol
//! parses, makes one call here, and encodes the answer; it never reads or
//! writes the store itself. One file per walk:
//!
//! - [`dhcp_client`]: what happens when a firmware, iPXE or an OS asks
//!   rackboot's DHCP (port 67 and the PXE boot server on 4011), with
//!   [`lease`] for the addresses.
//! - [`boot`]: what happens when iPXE fetches its boot script, and then the
//!   kernel and initrds it names; [`script_cache`] keeps the renders.
//! - [`agent`]: what happens when a booted node's agent pulls its config
//!   scripts, reports, waits for a reconfigure, or says its install is
//!   complete (and the cloud-init and answer documents it fetches).
//! - [`fleet`]: what the admin API reads and changes; the changes go
//!   through [`admin`], the one protection check, audited.
//! - [`admit`]: whether a MAC may boot here, asked by DHCP, the PXE boot
//!   server and HTTP alike; the one place a first request makes a record.
//! - [`identity`]: a new MAC in a known node's switch port (or board)
//!   taking over that node's record, where a subnet says so.
//! - [`bind`]: which address a node's credentials (boot script, token)
//!   belong to, from the leases and what proxyDHCP saw.
//! - [`power`]: what happens when an admin or a rollout acts on nodes'
//!   power through their BMCs.
//! - [`rollout`]: what happens when an admin reinstalls a fleet, node by
//!   node within a budget, canaries first.
//! - [`timeline`]: recording what a node did, and the state and bootenv
//!   changes that follow from it.

pub mod admin;
pub mod admit;
pub mod agent;
pub mod bind;
pub mod boot;
pub mod dhcp_client;
pub mod fleet;
pub mod identity;
pub mod lease;
pub mod power;
pub mod rollout;
pub mod script_cache;
pub mod timeline;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::boot::{Admission, CatalogCell};
pub use crate::store::StoreError;
use crate::store::{Change, Store, Subscriber};
use admit::Door;
use agent::ConfigWaits;
use bind::Binding;
use script_cache::ScriptCache;
use timeline::Timeline;

/// The boot flow of one appliance after DHCP: what HTTP's boot, node and
/// API endpoints call. Built once by `service`, shared by every request.
pub struct Control {
    store: Arc<dyn Store>,
    pub timeline: Timeline,
    catalog: Arc<CatalogCell>,
    /// Where rendered scripts point their URLs.
    http_base: String,
    /// Boot scripts as rendered for and last handed to each node.
    scripts: ScriptCache,
    /// Whether a MAC may boot at all: the decision DHCP asks too.
    pub door: Arc<Door>,
    /// Whose address a node's boot script and token go to.
    binding: Arc<Binding>,
    /// Who may start fetching a kernel now (`[admission]`). A plain mutex:
    /// every use is a few map operations, never held across an await.
    admission: Mutex<Admission>,
    /// Wakes the agents' long polls on a reconfigure.
    config_waits: ConfigWaits,
    /// Where `secret("name")` reads from.
    secrets_dir: PathBuf,
    /// Documents holding a secret each node was served in its current boot.
    secrets_served: crate::secrets::Ledger,
    default_bootenv: String,
    /// `[power]`.
    power: crate::config::PowerConfig,
    /// `[rollout.hooks]`: drain and undrain commands, by name.
    rollout_hooks: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

/// What [`Control::new`] is built from.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub timeline: Timeline,
    pub catalog: Arc<CatalogCell>,
    pub http_base: String,
    pub door: Arc<Door>,
    pub binding: Arc<Binding>,
    pub admission: Admission,
    pub config_waits: ConfigWaits,
    pub secrets_dir: PathBuf,
    pub default_bootenv: String,
    pub power: crate::config::PowerConfig,
    pub rollout_hooks: std::collections::BTreeMap<String, String>,
}

impl Control {
    pub fn new(p: Parts) -> Control {
        Control {
            store: p.store,
            timeline: p.timeline,
            catalog: p.catalog,
            http_base: p.http_base,
            scripts: ScriptCache::new(),
            door: p.door,
            binding: p.binding,
            admission: Mutex::new(p.admission),
            config_waits: p.config_waits,
            secrets_dir: p.secrets_dir,
            secrets_served: crate::secrets::Ledger::default(),
            default_bootenv: p.default_bootenv,
            power: p.power,
            rollout_hooks: std::sync::Arc::new(p.rollout_hooks),
        }
    }

    /// The admission state; a panic elsewhere while it was held left it
    /// consistent (each operation is a few map updates), so poison is ignored.
    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What control keeps in memory follows the store's changes, whichever
/// appliance or request made them: a record deleted loses its kept boot
/// script and its boot slot (a record made again under its MAC starts
/// afresh); a reconfigure wakes the agents waiting for one.
impl Subscriber for Control {
    fn changed(&self, change: &Change<'_>) {
        match *change {
            Change::NodeGone(mac) => {
                self.scripts.forget(mac);
                self.boot_slot_done(mac);
            }
            Change::ConfigBumped(_) => self.config_waits.notify(),
            Change::Node(_)
            | Change::Lease(_)
            | Change::LeaseGone(_)
            | Change::Event(..)
            | Change::Loaded => {}
        }
    }
}
