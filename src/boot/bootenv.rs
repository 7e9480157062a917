//! Bootenvs: what a node boots, per architecture, read from
//! `configs/bootenvs/*.toml` and validated before they are used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::BootArch;
use crate::text_file;

/// The built-in bootenv that boots a node from its own disk.
pub const LOCAL: &str = "local";

/// How iPXE hands a node back to its own disk. Firmware differs: most BIOS
/// and OVMF return to the next boot entry on `exit`; some UEFI boot managers
/// only move on after a failure status (`exit 1`); some BIOSes need an
/// explicit `sanboot` of the first disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum LocalMethod {
    #[serde(rename = "exit")]
    Exit,
    #[serde(rename = "exit 1")]
    ExitFailure,
    #[serde(rename = "sanboot")]
    Sanboot,
}

impl LocalMethod {
    pub fn ipxe(self) -> &'static str {
        match self {
            LocalMethod::Exit => "exit",
            LocalMethod::ExitFailure => "exit 1",
            LocalMethod::Sanboot => "sanboot --no-describe --drive 0x80",
        }
    }
}

impl LocalMethod {
    /// The same in a GRUB config. GRUB's `exit` returns to the firmware,
    /// which moves on to its next boot entry; there is no `sanboot` in
    /// GRUB, and GRUB boots only UEFI machines here, where `exit` is what
    /// `sanboot` would have done.
    pub fn grub(self) -> &'static str {
        match self {
            LocalMethod::Exit | LocalMethod::Sanboot => "exit",
            LocalMethod::ExitFailure => "exit 1",
        }
    }
}

/// The network loader a bootenv's UEFI nodes boot through.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    /// rackboot's iPXE: a script over HTTP, kernels over HTTP.
    #[default]
    Ipxe,
    /// The distribution's Microsoft-signed shim, then its signed GRUB: the
    /// chain a machine with Secure Boot enforced accepts. A per-MAC
    /// `grub.cfg` over TFTP, kernels over TFTP (signed GRUB has no HTTP).
    Grub,
}

impl Loader {
    pub fn as_str(self) -> &'static str {
        match self {
            Loader::Ipxe => "ipxe",
            Loader::Grub => "grub",
        }
    }
}

/// What one architecture boots in a bootenv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchBoot {
    /// Fetch a kernel and initrds (paths under the assets directory) and boot
    /// them with a command line rendered from `cmdline`, a template.
    Kernel {
        kernel: String,
        initrds: Vec<String>,
        cmdline: String,
    },
    /// Boot the node's own disk.
    Local(LocalMethod),
}

/// A named boot environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootenv {
    pub name: String,
    pub description: String,
    /// Config scripts (names in the scripts directory) the node runs after boot, in order.
    pub scripts: Vec<String>,
    pub arches: BTreeMap<BootArch, ArchBoot>,
    /// An OS installer: rendering its boot script puts the node in state
    /// `installing`, and it is expected to call back when the install is done.
    pub installer: bool,
    /// What the node boots once its installer has called back (`local`
    /// unless the file says otherwise); checked against the other bootenvs
    /// when the catalog loads.
    pub after_install: String,
    /// Kernels and initrds named by upstream URL and digest instead of a
    /// local path; [`ArchBoot::Kernel`] names them by their local path
    /// `sha256/<hex>`, where they are stored once fetched.
    pub remote: Vec<RemoteAsset>,
    /// Through which loader its UEFI nodes boot it (BIOS nodes, and nodes
    /// already running iPXE, boot it through iPXE whatever this says).
    pub loader: Loader,
}

/// A kernel or initrd on an upstream mirror: rackboot fetches it on first
/// use, checks it against `sha256`, and serves it as `sha256/<sha256>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteAsset {
    /// An `http` or `https` URL.
    pub url: String,
    /// Lowercase hex.
    pub sha256: String,
}

impl RemoteAsset {
    /// Where it is stored under the assets directory, and the path bootenvs
    /// and asset URLs name it by.
    pub fn local_path(&self) -> String {
        format!("{}/{}", crate::assets::STORE_DIR, self.sha256)
    }
}

impl Bootenv {
    /// The built-in `local` bootenv; a `local.toml` may replace it to choose
    /// another [`LocalMethod`] per architecture.
    pub fn builtin_local() -> Bootenv {
        Bootenv {
            name: LOCAL.into(),
            description: "boot from the node's own disk".into(),
            scripts: Vec::new(),
            arches: BootArch::ALL
                .into_iter()
                .map(|a| (a, ArchBoot::Local(LocalMethod::Exit)))
                .collect(),
            installer: false,
            after_install: LOCAL.into(),
            remote: Vec::new(),
            loader: Loader::Ipxe,
        }
    }

    pub fn for_arch(&self, arch: BootArch) -> Option<&ArchBoot> {
        self.arches.get(&arch)
    }

    /// What `path` (under the assets directory) is to a node booting this on `arch`.
    pub fn role_of(&self, arch: BootArch, path: &str) -> AssetRole {
        match self.for_arch(arch) {
            Some(ArchBoot::Kernel { kernel, .. }) if kernel == path => AssetRole::Kernel,
            Some(ArchBoot::Kernel { initrds, .. }) if initrds.iter().any(|i| i == path) => {
                AssetRole::Initrd
            }
            _ => AssetRole::Other,
        }
    }
}

/// What an asset is to a booting node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AssetRole {
    Kernel,
    Initrd,
    /// A loader, or a file this bootenv does not name.
    Other,
}

/// Why a bootenv file was refused. Names the file, and the line where the
/// parser knows it.
#[derive(Debug, thiserror::Error)]
pub enum BootenvError {
    #[error("cannot read bootenv {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bootenv {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("bootenv {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

mod raw {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Bootenv {
        #[serde(default)]
        pub description: String,
        #[serde(default)]
        pub scripts: Vec<String>,
        #[serde(default)]
        pub arch: BTreeMap<BootArch, Arch>,
        #[serde(default)]
        pub installer: bool,
        pub after_install: Option<String>,
        #[serde(default)]
        pub loader: Loader,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Arch {
        pub kernel: Option<AssetRef>,
        #[serde(default)]
        pub initrds: Vec<AssetRef>,
        #[serde(default)]
        pub cmdline: String,
        pub local: Option<LocalMethod>,
    }

    /// A kernel or initrd: a path inside assets_dir, or an upstream
    /// `{ url = "...", sha256 = "..." }`.
    #[derive(Debug)]
    pub enum AssetRef {
        Path(String),
        Remote { url: String, sha256: String },
    }

    // By hand rather than `#[serde(untagged)]`, whose error ("did not match
    // any variant") would not say what to write.
    impl<'de> Deserialize<'de> for AssetRef {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = AssetRef;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str(
                        "a path inside assets_dir, or { url = \"http://...\", sha256 = \"<64 hex digits>\" }",
                    )
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AssetRef, E> {
                    Ok(AssetRef::Path(v.to_string()))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<AssetRef, A::Error> {
                    use serde::de::Error;
                    let (mut url, mut sha256) = (None, None);
                    while let Some(key) = map.next_key::<String>()? {
                        match key.as_str() {
                            "url" => url = Some(map.next_value::<String>()?),
                            "sha256" => sha256 = Some(map.next_value::<String>()?),
                            other => {
                                return Err(A::Error::unknown_field(other, &["url", "sha256"]));
                            }
                        }
                    }
                    Ok(AssetRef::Remote {
                        url: url.ok_or_else(|| A::Error::missing_field("url"))?,
                        sha256: sha256.ok_or_else(|| A::Error::missing_field("sha256"))?,
                    })
                }
            }
            d.deserialize_any(Visitor)
        }
    }
}

/// Checks an upstream asset's URL and digest; the digest comes back lowercase.
fn check_remote(url: &str, sha256: &str) -> Result<RemoteAsset, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("url `{url}` is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "url `{url}` must be an http:// or https:// URL with a host"
        ));
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "sha256 `{sha256}` of {url} is not 64 hex digits (sha256sum prints it)"
        ));
    }
    Ok(RemoteAsset {
        url: url.to_string(),
        sha256: sha256.to_ascii_lowercase(),
    })
}

impl Bootenv {
    /// Parses one bootenv file's text; `path` names it in errors and its stem names the bootenv.
    pub fn parse(path: &Path, text: &str) -> Result<Bootenv, BootenvError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let invalid = |reason: String| BootenvError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if !is_bootenv_name(&name) {
            return Err(invalid(format!(
                "the file name `{name}` is not a valid bootenv name (letters, digits, - and _)"
            )));
        }
        let raw: raw::Bootenv = toml::from_str(text).map_err(|e| BootenvError::Parse {
            path: path.to_path_buf(),
            message: crate::config::toml_error(text, &e),
        })?;
        if raw.arch.is_empty() {
            return Err(invalid(
                "no [arch.*] table: say what bios, x86_64_efi or arm64_efi boot".into(),
            ));
        }
        let mut arches = BTreeMap::new();
        let mut remote: Vec<RemoteAsset> = Vec::new();
        for (arch, a) in raw.arch {
            let boot = match (a.kernel, a.local) {
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "[arch.{arch}] has both `kernel` and `local`: choose one"
                    )));
                }
                (None, None) => {
                    return Err(invalid(format!(
                        "[arch.{arch}] needs `kernel` (and initrds, cmdline) or `local`"
                    )));
                }
                (None, Some(method)) => ArchBoot::Local(method),
                (Some(kernel), None) => {
                    let mut paths = Vec::with_capacity(1 + a.initrds.len());
                    for r in std::iter::once(kernel).chain(a.initrds) {
                        paths.push(match r {
                            raw::AssetRef::Path(p) if is_relative_inside(&p) => p,
                            raw::AssetRef::Path(p) => {
                                return Err(invalid(format!(
                                    "[arch.{arch}] `{p}` must be a path inside assets_dir"
                                )));
                            }
                            raw::AssetRef::Remote { url, sha256 } => {
                                let r = check_remote(&url, &sha256)
                                    .map_err(|e| invalid(format!("[arch.{arch}] {e}")))?;
                                let path = r.local_path();
                                if !remote.contains(&r) {
                                    remote.push(r);
                                }
                                path
                            }
                        });
                    }
                    let kernel = paths.remove(0);
                    ArchBoot::Kernel {
                        kernel,
                        initrds: paths,
                        cmdline: a.cmdline,
                    }
                }
            };
            arches.insert(arch, boot);
        }
        for s in &raw.scripts {
            if !is_relative_inside(s) || s.contains('/') {
                return Err(invalid(format!(
                    "script `{s}` must be a file name in scripts_dir"
                )));
            }
        }
        let after_install = raw.after_install.unwrap_or_else(|| LOCAL.to_string());
        if !is_bootenv_name(&after_install) {
            return Err(invalid(format!(
                "after_install `{after_install}` is not a bootenv name (letters, digits, - and _)"
            )));
        }
        if after_install == name {
            return Err(invalid(
                "after_install names this bootenv itself: the node would reinstall forever (use `local`)"
                    .into(),
            ));
        }
        Ok(Bootenv {
            name,
            description: raw.description,
            scripts: raw.scripts,
            arches,
            installer: raw.installer,
            after_install,
            remote,
            loader: raw.loader,
        })
    }

    /// Reads and parses one file.
    pub fn load(path: &Path) -> Result<Bootenv, BootenvError> {
        text_file::load(
            path,
            |path, source| BootenvError::Read { path, source },
            Bootenv::parse,
        )
    }
}

/// A bootenv name: letters, digits, `-` and `_` (it is also a file stem).
pub fn is_bootenv_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A path that stays inside the directory it is joined to.
pub fn is_relative_inside(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
description = "test"
scripts = ["a.sh"]
[arch.x86_64_efi]
kernel = "x86_64/vmlinuz"
initrds = ["x86_64/initrd.img"]
cmdline = "console=ttyS0"
[arch.bios]
local = "sanboot"
"#;

    #[test]
    fn parses_kernel_and_local_arches() {
        let b = Bootenv::parse(Path::new("/c/install.toml"), GOOD).unwrap();
        assert_eq!(b.name, "install");
        assert_eq!(b.scripts, ["a.sh"]);
        assert_eq!(
            b.for_arch(BootArch::Bios),
            Some(&ArchBoot::Local(LocalMethod::Sanboot))
        );
        assert!(matches!(
            b.for_arch(BootArch::X86_64Efi),
            Some(ArchBoot::Kernel { .. })
        ));
        assert_eq!(b.for_arch(BootArch::Arm64Efi), None);
        assert!(!b.installer);
        assert_eq!(b.after_install, "local");
        let i = Bootenv::parse(
            Path::new("/c/install.toml"),
            &format!("installer = true\nafter_install = \"discovery\"\n{GOOD}"),
        )
        .unwrap();
        assert!(i.installer);
        assert_eq!(i.after_install, "discovery");
    }

    #[test]
    fn refusals_name_the_file_and_the_problem() {
        let cases = [
            (GOOD.replace("kernel =", "kernal ="), "kernal"),
            (
                GOOD.replace("x86_64/vmlinuz", "../../etc/shadow"),
                "inside assets_dir",
            ),
            (GOOD.replace("[arch.bios]", "[arch.ppc64]"), "ppc64"),
            (GOOD.replace("\"sanboot\"", "\"reboot\""), "reboot"),
            (
                GOOD.replace("scripts = [\"a.sh\"]", "scripts = [\"/bin/sh\"]"),
                "scripts_dir",
            ),
            ("description = \"x\"\n".to_string(), "no [arch.*]"),
            (GOOD.replace("cmdline", "local = \"exit\"\ncmdline"), "both"),
            (
                format!("after_install = \"no good\"\n{GOOD}"),
                "after_install `no good`",
            ),
            (format!("after_install = \"bad\"\n{GOOD}"), "itself"),
            (format!("installer = \"yes\"\n{GOOD}"), "expected a boolean"),
        ];
        for (text, want) in cases {
            let msg = Bootenv::parse(Path::new("/c/bad.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(msg.contains("/c/bad.toml"), "{msg}");
            assert!(msg.contains(want), "want `{want}` in: {msg}");
        }
    }

    #[test]
    fn parse_errors_carry_the_line() {
        let msg = Bootenv::parse(Path::new("b.toml"), "description = \"x\"\n[arch.bios\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2, column"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "one line: {msg}");
    }

    #[test]
    fn asset_roles_follow_the_bootenv() {
        let b = Bootenv::parse(Path::new("/c/install.toml"), GOOD).unwrap();
        let x = BootArch::X86_64Efi;
        assert_eq!(b.role_of(x, "x86_64/vmlinuz"), AssetRole::Kernel);
        assert_eq!(b.role_of(x, "x86_64/initrd.img"), AssetRole::Initrd);
        assert_eq!(b.role_of(x, "ipxe-amd64.efi"), AssetRole::Other);
        assert_eq!(
            b.role_of(BootArch::Bios, "x86_64/vmlinuz"),
            AssetRole::Other,
            "bios boots local"
        );
    }

    #[test]
    fn remote_assets_are_named_by_their_digest() {
        let sha = "AB".repeat(32);
        let text = format!(
            "[arch.arm64_efi]\nkernel = {{ url = \"https://mirror.example/Image\", sha256 = \"{sha}\" }}\n\
             initrds = [\"arm64/initrd.img\", {{ url = \"http://mirror.example/i\", sha256 = \"{sha}\" }}]\n"
        );
        let b = Bootenv::parse(Path::new("/c/r.toml"), &text).unwrap();
        let local = format!("sha256/{}", "ab".repeat(32));
        assert_eq!(
            b.for_arch(BootArch::Arm64Efi),
            Some(&ArchBoot::Kernel {
                kernel: local.clone(),
                initrds: vec!["arm64/initrd.img".into(), local.clone()],
                cmdline: String::new(),
            })
        );
        assert_eq!(b.remote.len(), 2, "{:?}", b.remote);
        assert_eq!(b.remote[0].local_path(), local);

        let cases = [
            ("ftp://m/Image", sha.clone(), "http:// or https://"),
            ("not a url", sha.clone(), "is not a URL"),
            ("http://m/Image", "abc".to_string(), "64 hex digits"),
        ];
        for (url, sha, want) in cases {
            let text = format!("[arch.bios]\nkernel = {{ url = \"{url}\", sha256 = \"{sha}\" }}\n");
            let msg = Bootenv::parse(Path::new("/c/r.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("/c/r.toml") && msg.contains(want),
                "{want}: {msg}"
            );
        }
        for (text, want) in [
            (
                "kernel = { url = \"http://m/k\" }",
                "missing field `sha256`",
            ),
            (
                "kernel = { url = \"http://m/k\", sha = \"x\" }",
                "unknown field `sha`",
            ),
            ("kernel = 3", "a path inside assets_dir, or { url"),
        ] {
            let msg = Bootenv::parse(Path::new("/c/r.toml"), &format!("[arch.bios]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(want) && msg.contains("line 2"),
                "{want}: {msg}"
            );
        }
    }

    #[test]
    fn path_containment() {
        assert!(is_relative_inside("x86_64/vmlinuz"));
        for p in ["", "/etc/passwd", "../x", "a/../../b", "./a"] {
            assert!(!is_relative_inside(p), "{p}");
        }
    }
}
