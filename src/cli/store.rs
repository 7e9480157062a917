//! `rackboot store migrate`: moving a site from SQLite to PostgreSQL.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::store::{PostgresConfig, SqliteStore, copy_site};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a site's node records, leases, timelines and script reports
    /// from its SQLite state directory into an empty PostgreSQL database
    /// (all or nothing). Stop rackboot on that state directory first. The
    /// password, when the database wants one, comes from
    /// $RACKBOOT_STORE_PASSWORD.
    Migrate {
        /// `sqlite:<state directory>`, e.g. sqlite:/var/lib/rackboot
        #[arg(long)]
        from: String,
        /// `postgres:<libpq connection string or URL>`, e.g.
        /// "postgres:host=db1 dbname=rackboot user=rackboot"
        #[arg(long)]
        to: String,
        /// CA certificates (PEM) to verify the database with, when --to
        /// says sslmode=require (default: the system's roots)
        #[arg(long, value_name = "PATH")]
        ca_file: Option<std::path::PathBuf>,
    },
}

pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate { from, to, ca_file } => migrate(&from, &to, ca_file),
    }
}

fn migrate(from: &str, to: &str, ca_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let Some(dir) = from.strip_prefix("sqlite:") else {
        bail!("--from {from}: expected sqlite:<state directory>");
    };
    let Some(url) = to.strip_prefix("postgres:") else {
        bail!("--to {to}: expected postgres:<connection string or URL>");
    };
    // Opening makes a store where there is none: a typo must not copy an
    // empty site.
    let db = Path::new(dir).join("rackboot.db");
    if !db.is_file() {
        bail!(
            "--from {from}: no {} (not a rackboot state directory)",
            db.display()
        );
    }
    let to = PostgresConfig {
        url: url.to_string(),
        password: std::env::var("RACKBOOT_STORE_PASSWORD").ok(),
        appliance: "migrate".into(),
        ca_file,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let copied = runtime.block_on(async {
        let source = SqliteStore::open(Path::new(dir)).await.with_context(|| {
            format!("--from {from} (is rackboot still running on it? stop it first)")
        })?;
        let copied = copy_site(&source, &to)
            .await
            .with_context(|| format!("--to {url}"))?;
        anyhow::Ok(copied)
    })?;
    println!(
        "copied {} node records, {} leases, {} timeline events, {} script reports and {} rollouts \
         from {dir}",
        copied.nodes, copied.leases, copied.events, copied.reports, copied.rollouts
    );
    println!(
        "next: set [store] engine = \"postgres\" and url in each appliance's config, then start them"
    );
    Ok(())
}
