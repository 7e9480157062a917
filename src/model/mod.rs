//! Plain domain types shared by every module. No I/O here.

/// `Display` and `FromStr` for an enum whose values have fixed names: `as_str` names each
/// value, `ALL` lists them, and parsing is naming backwards, so the two cannot disagree.
/// `$unknown` turns text that names no value into the error.
macro_rules! named_values {
    ($ty:ty) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    ($ty:ty, $unknown:expr) => {
        $crate::model::named_values!($ty);

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|value| value.as_str() == s)
                    .ok_or_else(|| $unknown(s))
            }
        }
    };
}
pub(crate) use named_values;

mod arch;
mod bmc;
mod client;
mod event;
mod lease;
mod mac;
mod node;
mod report;
mod rollout;
mod schema;
pub mod selector;
mod time;

pub use arch::{BootArch, ClientArch};
pub use bmc::{BmcRecord, Driver, PowerAction, PowerState};
pub use client::{ClientInfo, IPXE_FEATURE_HTTPS};
pub use event::{
    BootTarget, BootenvCause, BootenvFields, DeletedRecord, DhcpService, Document, Event,
    EventData, EventKind, FieldChange, StateChange, TftpStop, Via,
};
pub use lease::{Lease, LeaseState};
pub use mac::{Mac, MacParseError};
pub use node::{Choice, Node, NodeOrigin, NodeState};
pub use report::ScriptReport;
pub use rollout::{Budget, Hook, Phase, Rollout, RolloutNode, RolloutSpec, RolloutState};
pub use selector::{LabelSelector, LabelTerm, SelectorError};
pub use time::Timestamp;
