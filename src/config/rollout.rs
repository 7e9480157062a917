//! `[rollout.hooks]`: the commands a rollout may run to drain a node before
//! its reinstall and put it back after, by name. A rollout (started through
//! the API) names a hook; it never brings a command line of its own: an API
//! token must not be a way to run commands on the appliance.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Source};

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub hooks: BTreeMap<String, String>,
}

impl Section {
    /// The hooks by name (letters, digits, `-`, `_`).
    pub fn validate(self, src: &Source) -> Result<BTreeMap<String, String>, ConfigError> {
        for (name, line) in &self.hooks {
            let key = format!("rollout.hooks.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            {
                return Err(src.invalid(&key, "a hook's name is letters, digits, - and _"));
            }
            if line.trim().is_empty() {
                return Err(src.invalid(&key, "an empty command"));
            }
        }
        Ok(self.hooks)
    }
}
