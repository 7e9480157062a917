//! The admin API as tests use it: the tokens every test config grants, and the
//! node record as the API shows it, read from inside a lab (what the VM tests
//! poll and check a boot's timeline against).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::lab::{Lab, SERVER_IP};

/// The admin token every test config grants (scope `admin`).
pub const ADMIN_TOKEN: &str = "test-admin-token-5f1c0a9e7d3b2468";
/// A token of scope `read`.
pub const READ_TOKEN: &str = "test-read-token-0b7e4d2c9a1f3586";
/// The header curl sends with the admin token (`-H`).
pub const AUTH_HEADER: &str = "Authorization: Bearer test-admin-token-5f1c0a9e7d3b2468";

/// Writes `dir/api-tokens` granting [`ADMIN_TOKEN`] and [`READ_TOKEN`], and returns the
/// `[api]` line naming it.
pub fn tokens_file_line(dir: &Path) -> String {
    let file = dir.join("api-tokens");
    std::fs::write(
        &file,
        format!("# test tokens\nadmin {ADMIN_TOKEN} tests\nread {READ_TOKEN} tests (read-only)\n"),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    format!("tokens_file = \"{}\"\n", file.display())
}

/// `GET /api/v1/nodes/<mac>` from inside the lab; `None` until the node exists.
pub fn node(lab: &Lab, mac: &str) -> Option<Value> {
    let url = format!("http://{SERVER_IP}/api/v1/nodes/{mac}");
    let out = lab.run(
        "curl",
        &["-sf", "-m", "5", "-H", AUTH_HEADER, &url],
        Duration::from_secs(10),
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

pub fn kinds(node: &Value) -> Vec<(String, String)> {
    node["events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or_default().to_string(),
                        e["detail"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn timeline_text(node: &Value) -> String {
    kinds(node)
        .iter()
        .map(|(k, d)| format!("  {k:<18} {}", d.lines().next().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n")
}
