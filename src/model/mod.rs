//! Plain domain types shared by every module. No I/O here.

mod arch;
mod client;
mod event;
mod lease;
mod mac;
mod node;
mod report;
mod schema;
pub mod selector;
mod time;

pub use arch::{BootArch, ClientArch};
pub use client::{ClientInfo, IPXE_FEATURE_HTTPS};
pub use event::{
    BootTarget, BootenvCause, BootenvFields, DeletedRecord, DhcpService, Document, Event,
    EventData, EventKind, FieldChange, StateChange, TftpStop, Via,
};
pub use lease::{Lease, LeaseState};
pub use mac::{Mac, MacParseError};
pub use node::{Choice, Node, NodeOrigin, NodeState};
pub use report::ScriptReport;
pub use selector::{LabelSelector, LabelTerm, SelectorError};
pub use time::Timestamp;
