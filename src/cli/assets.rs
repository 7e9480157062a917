//! `rackboot assets add` and `rackboot assets identify`: import kernels and
//! initrds into the assets directory, and say what a kernel file is.

use std::path::{Path, PathBuf};

use crate::assets::{self, KernelArch};
use crate::config::Config;

pub fn add(
    config: &Path,
    arch: KernelArch,
    kernel: &Path,
    initrds: &[PathBuf],
) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let imported = assets::import(&cfg.assets_dir, arch, kernel, initrds)?;
    println!("kernel: {}", imported.kind);
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
    println!("\n# for a bootenv file (add a cmdline):");
    print!("{}", assets::bootenv_snippet(arch, &imported));
    Ok(())
}

pub fn identify(file: &Path) -> anyhow::Result<()> {
    let kind = assets::identify(file)?;
    println!("{}: {kind}", file.display());
    Ok(())
}
