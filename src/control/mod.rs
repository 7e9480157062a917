//! The code that calls the store and policy together, so that a rule is
//! enforced in one place whichever protocol or endpoint asks:
//!
//! - [`admin`]: admins' changes to node records (create, patch, bulk,
//!   import, delete), each through the one protection check and audited.
//! - [`admit`]: whether a MAC may boot here, asked by DHCP, the PXE boot
//!   server and HTTP alike; the one place a first request makes a record.
//! - [`bind`]: which address a node's credentials (boot script, token)
//!   belong to, from the leases and what proxyDHCP saw.
//! - [`dhcp_client`]: what happens when a firmware, iPXE or an OS asks
//!   rackboot's DHCP (port 67 and the PXE boot server on 4011), with
//!   [`lease`] for the addresses.
//! - [`timeline`]: recording what a node did, and the state and bootenv
//!   changes that follow from it.

pub mod admin;
pub mod admit;
pub mod bind;
pub mod dhcp_client;
pub mod lease;
pub mod timeline;
