//! `[store]`: how durable the lease journal is (see [`crate::store::SyncMode`]).

use serde::Deserialize;

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub sync: crate::store::SyncMode,
}
