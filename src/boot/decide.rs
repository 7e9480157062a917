//! What a booting client is handed by DHCP: a loader, its script, or nothing.

use super::bootenv::Loader;
use super::catalog::Catalog;
use crate::config::{LoaderMap, LocalBoot};
use crate::model::{BootArch, ClientInfo, Node, Timestamp};
use crate::routes::Urls;

/// The boot part of a DHCP answer. Addresses are the lease module's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Fetch this first-stage loader (a path under the assets directory) by TFTP.
    Loader { path: String, arch: BootArch },
    /// UEFI HTTP boot: fetch the loader from this URL.
    HttpLoader { url: String, arch: BootArch },
    /// The client already runs iPXE: fetch its per-MAC script. Handing a
    /// loader again here would make iPXE chainload itself forever.
    Script { url: String, arch: BootArch },
    /// An address, but nothing to boot (not a network-boot client).
    AddressOnly,
    /// The node boots from its own disk: an address and no boot file, so the
    /// firmware moves on to its next boot device at once.
    Local { arch: BootArch },
    /// Do not answer at all.
    Ignore { reason: String },
}

/// What a DHCP answer tells the client to boot, from a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFile {
    None,
    /// A file on rackboot's TFTP service (siaddr = server).
    Tftp(String),
    /// A URL for iPXE (`Script`) or for UEFI HTTP boot (`http_client`).
    Url {
        url: String,
        http_client: bool,
    },
}

impl Decision {
    /// The boot file this decision hands out.
    pub fn boot_file(&self) -> BootFile {
        match self {
            Decision::Loader { path, .. } => BootFile::Tftp(path.clone()),
            Decision::HttpLoader { url, .. } => BootFile::Url {
                url: url.clone(),
                http_client: true,
            },
            Decision::Script { url, .. } => BootFile::Url {
                url: url.clone(),
                http_client: false,
            },
            Decision::AddressOnly | Decision::Local { .. } | Decision::Ignore { .. } => {
                BootFile::None
            }
        }
    }

    /// The client's architecture, when the decision is about booting.
    pub fn arch(&self) -> Option<BootArch> {
        match self {
            Decision::Loader { arch, .. }
            | Decision::HttpLoader { arch, .. }
            | Decision::Script { arch, .. }
            | Decision::Local { arch } => Some(*arch),
            Decision::AddressOnly | Decision::Ignore { .. } => None,
        }
    }
}

/// Decides what `client` boots next. Pure: the same inputs give the same
/// answer, so DISCOVER and REQUEST agree and it can be called on every packet.
pub fn decide(client: &ClientInfo, loaders: &LoaderMap, urls: &Urls) -> Decision {
    if !client.is_pxe() {
        return Decision::AddressOnly;
    }
    let Some(code) = client.arch else {
        // iPXE always sends option 93, and so does every PXE ROM that follows
        // the PXE 2.1 spec; without it the loader cannot be chosen.
        return Decision::Ignore {
            reason: "PXE client without an architecture (option 93)".into(),
        };
    };
    let Some(arch) = code.boot_arch() else {
        return Decision::Ignore {
            reason: format!("unsupported client architecture {code}"),
        };
    };
    // An old iPXE (typically a NIC option ROM) is replaced by rackboot's own
    // loader first when the site asks for it (off by default: the round costs
    // a BIOS boot seconds, see `upgrade_old_ipxe`). rackboot's loaders
    // announce HTTPS, so the second round gets the script and this cannot loop.
    if client.is_ipxe && !(loaders.upgrade_old_ipxe && client.is_old_ipxe()) {
        return Decision::Script {
            url: urls.script(&client.mac),
            arch,
        };
    }
    let loader = match arch {
        BootArch::Bios => &loaders.bios,
        BootArch::X86_64Efi => &loaders.x86_64_efi,
        BootArch::Arm64Efi => &loaders.arm64_efi,
    };
    if code.is_http_boot() || client.is_http_client() {
        return Decision::HttpLoader {
            url: urls.http_loader(loader, &client.mac),
            arch,
        };
    }
    Decision::Loader {
        path: loader.clone(),
        arch,
    }
}

/// A node's `loader` that means "the Secure Boot chain of its
/// architecture" ([`Loader::Grub`]) rather than a file.
pub const GRUB_LOADER: &str = "grub";

/// Which loader `node` boots through at `now`: GRUB when its record says
/// so (a machine with Secure Boot enforced boots nothing else, its own disk
/// included) or when the bootenv it boots now does; else iPXE.
pub fn loader_of(node: &Node, catalog: &Catalog, now: Timestamp) -> Loader {
    if node.loader.as_deref() == Some(GRUB_LOADER) {
        return Loader::Grub;
    }
    let effective = super::lifecycle::effective_bootenv(node, now).bootenv;
    catalog.get(&effective).map_or(Loader::Ipxe, |b| b.loader)
}

/// [`decide`] for a client rackboot has a record of: the record's loader
/// override replaces its architecture's loader, a UEFI firmware whose node
/// boots through GRUB (`via`, from [`loader_of`]) gets the signed shim, and
/// a node that boots `local` at `now` (its effective bootenv, see
/// [`super::lifecycle::effective_bootenv`]) gets no boot file when
/// `loaders.local_boot` says so. Firmware that boots by HTTP, and clients
/// already running iPXE, keep iPXE: signed GRUB fetches nothing by HTTP.
pub fn decide_for_node(
    client: &ClientInfo,
    node: &Node,
    via: Loader,
    loaders: &LoaderMap,
    urls: &Urls,
    now: Timestamp,
) -> Decision {
    let decision = decide(client, loaders, urls);
    let arch = match &decision {
        Decision::Loader { arch, .. }
        | Decision::HttpLoader { arch, .. }
        | Decision::Script { arch, .. } => *arch,
        _ => return decision,
    };
    if loaders.local_boot == LocalBoot::NoBootFile
        && super::lifecycle::effective_bootenv(node, now).bootenv == super::bootenv::LOCAL
    {
        return Decision::Local { arch };
    }
    let own = node.loader.as_ref().filter(|l| *l != GRUB_LOADER);
    match (decision, own) {
        (Decision::Loader { arch, .. }, _) if via == Loader::Grub && arch != BootArch::Bios => {
            Decision::Loader {
                path: match arch {
                    BootArch::Arm64Efi => loaders.arm64_efi_grub.clone(),
                    _ => loaders.x86_64_efi_grub.clone(),
                },
                arch,
            }
        }
        (Decision::Loader { arch, .. }, Some(own)) => Decision::Loader {
            path: own.clone(),
            arch,
        },
        (Decision::HttpLoader { arch, .. }, Some(own)) => Decision::HttpLoader {
            url: urls.http_loader(own, &client.mac),
            arch,
        },
        (d, _) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClientArch;

    /// The loaders of a config that names none.
    fn loaders() -> LoaderMap {
        LoaderMap::default()
    }

    fn client(arch: Option<u16>, vendor: Option<&str>, ipxe: bool) -> ClientInfo {
        ClientInfo {
            mac: "52:54:00:00:00:01".parse().unwrap(),
            arch: arch.map(ClientArch),
            vendor_class: vendor.map(str::to_string),
            user_class: ipxe.then(|| "iPXE".to_string()),
            is_ipxe: ipxe,
            ipxe_features: vec![],
            relay: None,
        }
    }

    #[test]
    fn decision_table() {
        let urls = Urls {
            http_base: "http://10.0.0.1".into(),
        };
        let script = |arch| Decision::Script {
            url: "http://10.0.0.1/boot/52:54:00:00:00:01.ipxe".into(),
            arch,
        };
        let loader = |p: &str, arch| Decision::Loader {
            path: p.into(),
            arch,
        };
        let pxe = Some("PXEClient:Arch:00000:UNDI:002001");
        let table = [
            (
                client(Some(0), pxe, false),
                loader("undionly.kpxe", BootArch::Bios),
            ),
            (
                client(Some(7), pxe, false),
                loader("ipxe-amd64.efi", BootArch::X86_64Efi),
            ),
            (
                client(Some(9), pxe, false),
                loader("ipxe-amd64.efi", BootArch::X86_64Efi),
            ),
            (
                client(Some(11), pxe, false),
                loader("ipxe-arm64.efi", BootArch::Arm64Efi),
            ),
            (client(Some(0), pxe, true), script(BootArch::Bios)),
            (client(Some(7), pxe, true), script(BootArch::X86_64Efi)),
            (client(Some(11), None, true), script(BootArch::Arm64Efi)),
            (
                client(Some(16), Some("HTTPClient:Arch:00016"), false),
                Decision::HttpLoader {
                    url: "http://10.0.0.1/assets/ipxe-amd64.efi?mac=52:54:00:00:00:01".into(),
                    arch: BootArch::X86_64Efi,
                },
            ),
            (
                client(Some(19), Some("HTTPClient:Arch:00019"), false),
                Decision::HttpLoader {
                    url: "http://10.0.0.1/assets/ipxe-arm64.efi?mac=52:54:00:00:00:01".into(),
                    arch: BootArch::Arm64Efi,
                },
            ),
            (client(None, None, false), Decision::AddressOnly),
            (client(None, Some("MSFT 5.0"), false), Decision::AddressOnly),
        ];
        for (c, want) in table {
            assert_eq!(decide(&c, &loaders(), &urls), want, "{c:?}");
        }
    }

    /// OVMF's HTTP boot (tests/vm_httpboot.rs) downloads this URL; rackboot
    /// puts the download on the node's timeline only when it names the node.
    #[test]
    fn http_boot_loader_url_names_the_node_after_the_efi_path() {
        let urls = Urls {
            http_base: "http://10.77.0.1".into(),
        };
        let ovmf = client(Some(16), Some("HTTPClient:Arch:00016:UNDI:003000"), false);
        let Decision::HttpLoader { url, .. } = decide(&ovmf, &loaders(), &urls) else {
            panic!("not an HTTP loader");
        };
        let (path, query) = url.split_once('?').expect("a query");
        assert_eq!(path, "http://10.77.0.1/assets/ipxe-amd64.efi");
        assert_eq!(query, "mac=52:54:00:00:00:01");
        let mut node = Node::discovered(
            ovmf.mac,
            "discovery",
            "t".into(),
            crate::model::Timestamp(0),
        );
        node.loader = Some("snponly.efi".into());
        assert_eq!(
            decide_for_node(&ovmf, &node, Loader::Ipxe, &loaders(), &urls, Timestamp(0)),
            Decision::HttpLoader {
                url: "http://10.77.0.1/assets/snponly.efi?mac=52:54:00:00:00:01".into(),
                arch: BootArch::X86_64Efi,
            }
        );
    }

    #[test]
    fn an_ipxe_without_https_gets_rackboots_loader_once_when_asked() {
        let urls = Urls {
            http_base: "http://10.0.0.1".into(),
        };
        let mut old_rom = client(Some(0), Some("PXEClient"), true);
        old_rom.ipxe_features = vec![0x13, 0x18];
        // By default the ROM's iPXE fetches its script: rackboot's boot
        // path is plain HTTP, which every iPXE speaks.
        assert!(matches!(
            decide(&old_rom, &loaders(), &urls),
            Decision::Script { .. }
        ));
        let mut upgrade = loaders();
        upgrade.upgrade_old_ipxe = true;
        assert_eq!(
            decide(&old_rom, &upgrade, &urls),
            Decision::Loader {
                path: "undionly.kpxe".into(),
                arch: BootArch::Bios
            }
        );
        let mut ours = old_rom.clone();
        ours.ipxe_features.push(crate::model::IPXE_FEATURE_HTTPS);
        assert!(matches!(
            decide(&ours, &upgrade, &urls),
            Decision::Script { .. }
        ));
        // No feature list at all: trust it rather than risk a chainload loop.
        let silent = client(Some(0), Some("PXEClient"), true);
        assert!(matches!(
            decide(&silent, &upgrade, &urls),
            Decision::Script { .. }
        ));
    }

    #[test]
    fn node_overrides_loader_and_local_nodes_can_get_no_boot_file() {
        let urls = Urls {
            http_base: "http://10.0.0.1".into(),
        };
        let mut node = Node::discovered(
            "52:54:00:00:00:01".parse().unwrap(),
            "discovery",
            "t".into(),
            crate::model::Timestamp(0),
        );
        let fw = client(Some(7), Some("PXEClient"), false);
        node.loader = Some("snponly.efi".into());
        assert_eq!(
            decide_for_node(&fw, &node, Loader::Ipxe, &loaders(), &urls, Timestamp(0)),
            Decision::Loader {
                path: "snponly.efi".into(),
                arch: BootArch::X86_64Efi
            }
        );
        // iPXE still gets its script: the override is the first stage only.
        let ipxe = client(Some(7), Some("PXEClient"), true);
        assert!(matches!(
            decide_for_node(&ipxe, &node, Loader::Ipxe, &loaders(), &urls, Timestamp(0)),
            Decision::Script { .. }
        ));

        node.bootenv = "local".into();
        assert!(matches!(
            decide_for_node(&fw, &node, Loader::Ipxe, &loaders(), &urls, Timestamp(0)),
            Decision::Loader { .. }
        ));
        let mut no_file = loaders();
        no_file.local_boot = LocalBoot::NoBootFile;
        for c in [&fw, &ipxe] {
            assert_eq!(
                decide_for_node(c, &node, Loader::Ipxe, &no_file, &urls, Timestamp(0)),
                Decision::Local {
                    arch: BootArch::X86_64Efi
                }
            );
        }
        // Firmware PXE's answer for `node` at `t`.
        let firmware_at = |node: &Node, t: i64| {
            decide_for_node(&fw, node, Loader::Ipxe, &no_file, &urls, Timestamp(t))
        };
        // A one-time boot into something else wins over local.
        node.next_bootenv = Some("rescue".into());
        assert!(matches!(firmware_at(&node, 0), Decision::Loader { .. }));
        // So does a lease, until it runs out.
        node.bootenv_expires = Some(Timestamp(1000));
        assert!(matches!(firmware_at(&node, 999), Decision::Loader { .. }));
        assert!(matches!(firmware_at(&node, 1000), Decision::Local { .. }));
        // And a leased local boot of a node whose bootenv is something else.
        node.bootenv = "discovery".into();
        node.next_bootenv = Some("local".into());
        assert!(matches!(firmware_at(&node, 999), Decision::Local { .. }));
        assert!(matches!(firmware_at(&node, 1000), Decision::Loader { .. }));
        node.bootenv = "local".into();
        node.next_bootenv = Some("rescue".into());
        node.bootenv_expires = None;
        // Non-PXE clients are unaffected.
        let plain = client(None, None, false);
        assert_eq!(
            decide_for_node(&plain, &node, Loader::Ipxe, &no_file, &urls, Timestamp(0)),
            Decision::AddressOnly
        );
    }

    #[test]
    fn every_registered_architecture_with_and_without_ipxe() {
        let urls = Urls {
            http_base: "http://10.0.0.1".into(),
        };
        // RFC 4578 and the IANA registry: 0..=41, plus values beyond it.
        for code in (0u16..=45).chain([0x00ff, 0xffff]) {
            for ipxe in [false, true] {
                let vendor = if matches!(code, 16 | 19) && !ipxe {
                    format!("HTTPClient:Arch:{code:05}")
                } else {
                    format!("PXEClient:Arch:{code:05}")
                };
                let d = decide(&client(Some(code), Some(&vendor), ipxe), &loaders(), &urls);
                let want_arch = crate::model::ClientArch(code).boot_arch();
                match (want_arch, &d) {
                    (None, Decision::Ignore { reason }) => {
                        assert!(reason.contains(&code.to_string()), "{code}: {reason}")
                    }
                    (Some(a), Decision::Script { arch, .. }) if ipxe => assert_eq!(*arch, a),
                    (Some(a), Decision::Loader { arch, path }) if !ipxe => {
                        assert_eq!(*arch, a);
                        assert!(!matches!(code, 16 | 19), "{code} is HTTP boot");
                        assert!(path.ends_with(".kpxe") || path.ends_with(".efi"));
                    }
                    (Some(a), Decision::HttpLoader { arch, url }) if !ipxe => {
                        assert_eq!(*arch, a);
                        assert!(matches!(code, 16 | 19), "{code}");
                        assert!(url.starts_with("http://10.0.0.1/assets/"));
                    }
                    _ => panic!("option 93 = {code}, ipxe = {ipxe}: {d:?}"),
                }
            }
        }
    }

    #[test]
    fn unsupported_architectures_are_ignored_with_a_reason() {
        let urls = Urls {
            http_base: "http://10.0.0.1".into(),
        };
        for code in [1, 2, 6, 10, 12, 22, 25, 27, 39, 41, 999] {
            for ipxe in [false, true] {
                match decide(
                    &client(Some(code), Some("PXEClient"), ipxe),
                    &loaders(),
                    &urls,
                ) {
                    Decision::Ignore { reason } => assert!(reason.contains(&code.to_string())),
                    other => panic!("{code}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            decide(&client(None, Some("PXEClient"), false), &loaders(), &urls),
            Decision::Ignore { .. }
        ));
    }

    #[test]
    fn a_node_booting_through_grub_gets_the_signed_shim_of_its_architecture() {
        let urls = Urls {
            http_base: "http://10.0.0.1".into(),
        };
        let node = Node::discovered(
            "52:54:00:00:00:01".parse().unwrap(),
            "discovery",
            "t".into(),
            Timestamp(0),
        );
        let pxe = Some("PXEClient");
        let shim = |path: &str, arch| Decision::Loader {
            path: path.into(),
            arch,
        };
        let grub = |c: &ClientInfo| {
            decide_for_node(c, &node, Loader::Grub, &loaders(), &urls, Timestamp(0))
        };
        assert_eq!(
            grub(&client(Some(7), pxe, false)),
            shim("shimx64.efi", BootArch::X86_64Efi)
        );
        assert_eq!(
            grub(&client(Some(11), pxe, false)),
            shim("shimaa64.efi", BootArch::Arm64Efi)
        );
        // BIOS has no Secure Boot, iPXE is already past the firmware, and
        // signed GRUB cannot fetch by HTTP: those keep the iPXE chain.
        assert_eq!(
            grub(&client(Some(0), pxe, false)),
            shim("undionly.kpxe", BootArch::Bios)
        );
        assert!(matches!(
            grub(&client(Some(7), pxe, true)),
            Decision::Script { .. }
        ));
        assert!(matches!(
            grub(&client(Some(16), Some("HTTPClient"), false)),
            Decision::HttpLoader { .. }
        ));
        // `grub` in the record is the chain, never a file called "grub".
        let mut own = node.clone();
        own.loader = Some(GRUB_LOADER.into());
        assert_eq!(
            decide_for_node(
                &client(Some(0), pxe, false),
                &own,
                Loader::Grub,
                &loaders(),
                &urls,
                Timestamp(0)
            ),
            shim("undionly.kpxe", BootArch::Bios)
        );
    }
}
