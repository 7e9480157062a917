//! rackboot's DNS service: node hostnames and the reverse names of every served subnet,
//! answered from the name table the store keeps current.
//!
//! What this module owns:
//! - deciding, without I/O, what a question deserves ([`Zone::answer`]): A for
//!   `<host>.<domain>`, PTR for addresses of the boot subnet and every relayed subnet, SOA and
//!   NS at each zone apex, NODATA or NXDOMAIN (with the zone's SOA, RFC 2308) inside those
//!   zones;
//! - names outside the zones: forwarded to `[dns] forwarders` when the client asks for
//!   recursion, else REFUSED, so rackboot is never an open resolver of its own;
//! - serving over UDP and TCP on sockets the caller has already bound ([`serve`]),
//!   authoritative and with a short TTL because leases change.
//!
//! What it does not own:
//! - the data: node hostnames and addresses come from [`crate::names::NameTable`], which the
//!   store keeps current, as is the SOA serial;
//! - binding sockets, configuration and the cancellation token (`service.rs`);
//! - AAAA, zone transfers, dynamic updates, DNSSEC: none exist for rackboot's nodes.

mod batch;
mod error;
mod forward;
pub mod metrics;
mod respond;
mod server;
mod zone;

pub use error::DnsError;
pub use forward::UPSTREAM_TIMEOUT;
pub use respond::{ANSWER_TTL, NEGATIVE_TTL};
pub use server::serve;
pub use zone::{Answer, Apex, Zone};

/// For the fuzz target (`crate::fuzzing::dns`), which answers as the server does.
#[doc(hidden)]
pub use respond::{Outcome, Responder, Transport};
