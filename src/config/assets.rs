//! `[assets]`: the watched drop folder.

use std::path::PathBuf;

use serde::Deserialize;

use super::Source;

/// No folder, no watching.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    pub drop_dir: Option<PathBuf>,
}

/// `[assets]`: where kernels dropped for import arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetsConfig {
    /// The watched drop folder (absolute), if any; see [`crate::assets::drop`](mod@crate::assets::drop).
    pub drop_dir: Option<PathBuf>,
}

impl Section {
    pub fn validate(self, src: &Source) -> AssetsConfig {
        AssetsConfig {
            drop_dir: self.drop_dir.as_deref().map(|p| src.resolve(p)),
        }
    }
}
