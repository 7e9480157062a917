//! rackboot's DNS service: node hostnames and the boot subnet's reverse names, answered from
//! rackboot's own node records.
//!
//! What this module owns:
//! - deciding, without I/O, what a question deserves ([`Zone::answer`]): A for
//!   `<host>.<domain>`, PTR for addresses of the boot subnet, NODATA or NXDOMAIN inside those two
//!   zones, and REFUSED for every other name. rackboot is authoritative only; it never
//!   recurses or forwards, so it can never act as an open resolver;
//! - serving those answers over UDP and TCP on sockets the caller has already bound
//!   ([`serve`]), authoritative and with a short TTL because leases change.
//!
//! What it does not own:
//! - the data: node hostnames and addresses come through [`NameSource`], which the service
//!   implements on top of the store;
//! - binding sockets, configuration and the cancellation token (`service.rs`);
//! - AAAA, SOA, NS, zone transfers, dynamic updates, DNSSEC: none exist for rackboot's nodes.
//!   Negative answers carry no SOA, so resolvers do not cache them (RFC 2308 §5), which is what
//!   we want while nodes are still appearing.

mod error;
mod server;
mod zone;

pub use error::DnsError;
pub use server::{ANSWER_TTL, NameSource, serve};
pub use zone::{Answer, Zone};
