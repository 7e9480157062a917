//! `[boot]`: what a new node boots, and how a node booting `local` is sent
//! to its disk.

use serde::Deserialize;

#[derive(Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Section {
    /// The bootenv a MAC seen for the first time is given.
    pub default_bootenv: String,
    pub local_boot: LocalBoot,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            default_bootenv: "discovery".into(),
            local_boot: LocalBoot::default(),
        }
    }
}

/// How a node whose bootenv is `local` is sent to its disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalBoot {
    /// The normal chain, ending in an iPXE script that exits to the disk
    /// (the bootenv's `local` method).
    #[default]
    Script,
    /// An address but no boot file: the firmware's network boot fails at
    /// once and it moves on to the next boot device.
    NoBootFile,
}
