//! `[service]`: who `rackboot serve` runs as once its sockets are bound.

use serde::Deserialize;

use super::{ConfigError, Source};

/// Unset: rackboot stays who it was started as.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub user: Option<String>,
    pub group: Option<String>,
}

/// `[service]`: the account to switch to (names, looked up at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAsConfig {
    pub user: String,
    /// The user's primary group when not set.
    pub group: Option<String>,
}

impl Section {
    pub fn validate(self, src: &Source) -> Result<Option<RunAsConfig>, ConfigError> {
        match (self.user, self.group) {
            (Some(user), group) => {
                if user.is_empty() || group.as_deref() == Some("") {
                    return Err(src.invalid(
                        "service",
                        "service.user and service.group must not be empty",
                    ));
                }
                Ok(Some(RunAsConfig { user, group }))
            }
            (None, Some(_)) => Err(src.invalid(
                "service",
                "service.group needs service.user (the account rackboot switches to after binding its ports)",
            )),
            (None, None) => Ok(None),
        }
    }
}
