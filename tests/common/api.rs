//! The node record as the API shows it, read from inside a lab: what the VM
//! tests poll and check a boot's timeline against.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::time::Duration;

use serde_json::Value;

use super::lab::{Lab, SERVER_IP};

/// `GET /api/v1/nodes/<mac>` from inside the lab; `None` until the node exists.
pub fn node(lab: &Lab, mac: &str) -> Option<Value> {
    let url = format!("http://{SERVER_IP}/api/v1/nodes/{mac}");
    let out = lab.run("curl", &["-sf", "-m", "5", &url], Duration::from_secs(10));
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
