//! DHCP leases as the store keeps them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{Mac, Timestamp};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Held for a client between OFFER and REQUEST.
    Offered,
    /// Acknowledged: the client uses it.
    Bound,
    /// A client said the address is in use (DHCPDECLINE): kept out of the pool.
    Declined,
}

impl LeaseState {
    pub const ALL: [LeaseState; 3] = [LeaseState::Offered, LeaseState::Bound, LeaseState::Declined];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Declined => "declined",
        }
    }
}

super::named_values!(LeaseState, |s| format!("unknown lease state `{s}`"));

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// `None` for a declined address.
    pub mac: Option<Mac>,
    pub state: LeaseState,
    pub expires: Timestamp,
}

impl Lease {
    /// Whether the address is still held at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires > now
    }
}
