//! `rackboot bootenv list|show|check`: the bootenvs the server has in force,
//! and whether files load as the server would load them.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use super::client::{Client, Failure, cell, print_json, print_rows, query_value};
use crate::routes::api;

#[derive(Debug, Subcommand)]
pub enum BootenvCommand {
    /// Bootenvs in force, and any file the last reload refused.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One bootenv: per architecture its kernel, initrds and command line.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Check bootenv files as the server would load them (nothing is
    /// written); without files, report what the last reload refused. Exit
    /// 4 when anything does not load.
    Check { files: Vec<PathBuf> },
}

pub fn run(client: &Client, cmd: BootenvCommand) -> anyhow::Result<()> {
    match cmd {
        BootenvCommand::List { json } => {
            let all = client.get(api::BOOTENVS)?;
            if json {
                print_json(&all);
                return Ok(());
            }
            print_rows(
                &["NAME", "ARCHS", "SCRIPTS", "DESCRIPTION"],
                &all["bootenvs"],
                |b| {
                    let name = cell(&b["name"]);
                    vec![
                        name,
                        join(&b["archs"]),
                        join(&b["scripts"]),
                        cell(&b["description"]),
                    ]
                },
            );
            print_rejected(&all["rejected"]);
        }
        BootenvCommand::Show { name, json } => {
            let b = client.get(&api::bootenv(&name))?;
            if json {
                print_json(&b);
                return Ok(());
            }
            println!("{} ({})", cell(&b["name"]), cell(&b["file"]));
            println!("description: {}", cell(&b["description"]));
            println!("scripts: {}", join(&b["scripts"]));
            for (arch, a) in b["arch"].as_object().into_iter().flatten() {
                println!("[{arch}]");
                if let Some(local) = a["local"].as_str() {
                    println!("  local: {local}");
                    continue;
                }
                println!("  kernel:  {}", cell(&a["kernel"]));
                println!("  initrds: {}", join(&a["initrds"]));
                println!("  cmdline: {}", cell(&a["cmdline"]));
            }
        }
        BootenvCommand::Check { files } => {
            if files.is_empty() {
                let all = client.get(api::BOOTENVS)?;
                let n = all["bootenvs"].as_array().map_or(0, Vec::len);
                let rejected = all["rejected"].as_array().map_or(0, Vec::len);
                println!("{n} bootenv(s) in force");
                print_rejected(&all["rejected"]);
                if rejected > 0 {
                    return Err(Failure::CheckFailed(
                        "the server refused a bootenv or script file: fix it and it is picked up within seconds".into(),
                    )
                    .into());
                }
                return Ok(());
            }
            let mut bad = 0;
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| Failure::Input(format!("cannot read {}: {e}", file.display())))?;
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("candidate");
                let r = client.post_text(
                    &format!("{}?name={}", api::BOOTENVS_VALIDATE, query_value(name)),
                    text,
                )?;
                if r["ok"] == true {
                    println!("{}: ok", file.display());
                    continue;
                }
                bad += 1;
                for e in r["errors"].as_array().into_iter().flatten() {
                    let line = e["line"]
                        .as_u64()
                        .map(|l| format!(", line {l}"))
                        .unwrap_or_default();
                    // Errors in the candidate name the server-side path: show the file given.
                    let candidate = e["file"]
                        .as_str()
                        .is_none_or(|f| f.ends_with(&format!("/{name}.toml")));
                    let file = if candidate {
                        file.display().to_string()
                    } else {
                        cell(&e["file"])
                    };
                    println!("{file}{line}: {}", cell(&e["reason"]));
                }
            }
            if bad > 0 {
                return Err(Failure::CheckFailed(format!(
                    "{bad} of {} file(s) would be refused",
                    files.len()
                ))
                .into());
            }
        }
    }
    Ok(())
}

fn join(v: &Value) -> String {
    let parts: Vec<String> = v.as_array().into_iter().flatten().map(cell).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn print_rejected(rejected: &Value) {
    for r in rejected.as_array().into_iter().flatten() {
        let line = r["line"]
            .as_u64()
            .map(|l| format!(", line {l}"))
            .unwrap_or_default();
        println!(
            "refused at {}: {}{line}: {}",
            cell(&r["at"]),
            cell(&r["file"]),
            cell(&r["reason"])
        );
    }
}
