//! `rackboot assets add` and `rackboot assets identify`: import kernels and
//! initrds into the assets directory (and name them in a bootenv), and say
//! what a kernel file is.

use std::path::{Path, PathBuf};

use crate::assets::{self, ArchSpec, Imported, Source, into_bootenv};
use crate::config::Config;

pub fn add(
    config: &Path,
    arch: &ArchSpec,
    kernel: &Path,
    initrds: &[PathBuf],
    bootenv: Option<&str>,
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    // The paths an admin typed: links are followed.
    let kernel = Source::open(kernel)?;
    let initrds = Source::open_all(initrds)?;
    let Some(name) = bootenv else {
        let imported = assets::import(&cfg.assets_dir, arch, &kernel, &initrds)?;
        print_stored(&cfg, &imported);
        println!("\n# for a bootenv file (add a cmdline), or pass --bootenv NAME:");
        print!("{}", assets::bootenv_snippet(&arch.boot, &imported));
        return Ok(());
    };
    let added = into_bootenv::add(
        &into_bootenv::Target::from(&cfg),
        name,
        arch,
        &kernel,
        &initrds,
    )?;
    print_stored(&cfg, &added.imported);
    // A Secure Boot bootenv's kernel is verified by shim before it starts:
    // an unsigned one would stop every machine booting it.
    let secure = crate::boot::Bootenv::load(&added.path)
        .is_ok_and(|b| b.loader == crate::boot::Loader::Grub);
    if secure && added.imported.signed != assets::Signature::Signed {
        eprintln!(
            "warning: bootenv {name} boots through GRUB (loader = \"grub\", Secure Boot), but kernel {} is {}: \
             firmware with Secure Boot on will refuse it; import the distribution's signed kernel",
            kernel.path.display(),
            added.imported.signed.as_str()
        );
    }
    let tables: Vec<String> = added.arches.iter().map(|a| format!("[arch.{a}]")).collect();
    let what = match (added.created, added.changed) {
        (true, _) => "created",
        (false, true) => "updated",
        (false, false) => "already up to date",
    };
    println!(
        "bootenv {name}: {what}: {} {} (a running rackboot puts it in force within seconds)",
        added.path.display(),
        tables.join(" ")
    );
    Ok(())
}

fn print_stored(cfg: &Config, imported: &Imported) {
    println!("kernel: {}, {}", imported.kind, imported.signed.as_str());
    let assets_dir = cfg.assets_dir.display();
    for s in std::iter::once(&imported.kernel).chain(&imported.initrds) {
        let how = if s.already_present {
            "already present"
        } else {
            "stored"
        };
        println!(
            "{how}: {} -> {assets_dir}/{} ({} bytes)",
            s.source.display(),
            s.relative,
            s.bytes
        );
    }
}

/// Prints what `file` is and which bootenv tables could boot it as their
/// kernel; fails, saying why, when none could (an EFI application, say).
pub fn identify(file: &Path) -> anyhow::Result<()> {
    let (kind, boots) = assets::identify(file)?;
    let signed = std::fs::File::open(file)
        .and_then(|f| assets::signature::signature(&f))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let tables: Vec<String> = boots.iter().map(|a| format!("[arch.{a}]")).collect();
    println!(
        "{}: {kind}; {}; a kernel for {}",
        file.display(),
        signed.as_str(),
        tables.join(" ")
    );
    Ok(())
}
