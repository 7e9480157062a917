//! `rackboot serve` and `rackboot check`.

use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::boot::Catalog;
use crate::config::Config;

pub fn serve(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            on_signal.cancel();
        });
        crate::service::run(cfg, cancel, || {
            // Type=notify: systemd considers rackboot started only now, with every socket bound.
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        })
        .await
    })?;
    Ok(())
}

pub fn check(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let catalog = Catalog::load(
        &cfg.bootenvs_dir,
        &cfg.scripts_dir,
        &cfg.assets_dir,
        &cfg.default_bootenv,
    )?;
    // What `serve` would refuse at start-up: the boot interface is missing,
    // has no address, or its address is in no [[dhcp.subnet]].
    let address = crate::service::boot_address(&cfg)?;
    crate::service::api_auth(&cfg)?;
    if let Some(t) = &cfg.api.tls {
        crate::http::tls::server_config(&t.cert, &t.key, &cfg.path)?;
    }
    for dir in [&cfg.cloud_init_dir, &cfg.answers_dir] {
        let n = crate::http::check_seed_templates(dir).map_err(anyhow::Error::msg)?;
        if n > 0 {
            println!("{}: {n} templates ok", dir.display());
        }
    }
    println!("{}: ok", cfg.path.display());
    println!("network.interface {}: ok, address {address}", cfg.interface);
    match &cfg.api.tokens_file {
        Some(p) => println!("API tokens {}: ok", p.display()),
        None => println!("API: disabled (no api.tokens_file)"),
    }
    for b in catalog.bootenvs() {
        let arches: Vec<&str> = b.arches.keys().map(|a| a.as_str()).collect();
        println!(
            "bootenv {}: {} ({})",
            b.name,
            arches.join(", "),
            b.description
        );
    }
    Ok(())
}
