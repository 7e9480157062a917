//! `explain`: what a client would be handed right now, and why, without a
//! packet. The same decision DHCP makes ([`decide_for_node`]) and the script
//! HTTP would render, with the reasons spelt out for an admin.

use serde::Serialize;

use super::bootenv::{LOCAL, Loader};
use super::catalog::Catalog;
use super::decide::{Decision, GRUB_LOADER, decide_for_node};
use super::lifecycle::Choice;
use super::script::render_script;
use crate::config::LoaderMap;
use crate::model::{BootArch, ClientArch, ClientInfo, Mac, Node, Timestamp};
use crate::routes::Urls;

/// The bootenv `node` boots at `now` ([`super::lifecycle::effective_bootenv`]),
/// and why, in words.
pub fn bootenv_reason(node: &Node, now: Timestamp) -> (String, String) {
    let e = super::lifecycle::effective_bootenv(node, now);
    let why = match (e.choice, &node.next_bootenv, node.bootenv_expires) {
        (Choice::Once, _, _) => format!(
            "next_bootenv `{}` (once; then back to `{}`)",
            e.bootenv, node.bootenv
        ),
        (Choice::Lease { until }, _, _) => format!(
            "next_bootenv `{}` until {until} (then back to `{}`)",
            e.bootenv, node.bootenv
        ),
        (Choice::Base, Some(next), Some(until)) => format!(
            "bootenv `{}` (next_bootenv `{next}` expired at {until})",
            node.bootenv
        ),
        (Choice::Base, _, _) => format!("bootenv `{}`", node.bootenv),
    };
    (e.bootenv, why)
}

/// The option 93 value a firmware of `arch` sends, for a client described
/// by its boot architecture only.
pub fn arch_code(arch: BootArch) -> ClientArch {
    match arch {
        BootArch::Bios => ClientArch::X86_BIOS,
        BootArch::X86_64Efi => ClientArch::X64_UEFI,
        BootArch::Arm64Efi => ClientArch::ARM64_UEFI,
    }
}

/// One config script a node runs, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConfigScript {
    pub script: String,
    pub reason: String,
}

/// What a client would get, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub mac: Mac,
    /// Whether rackboot has a record of this MAC.
    pub known: bool,
    /// Option 93 as assumed, e.g. `7 (x64 UEFI)`.
    pub client_arch: String,
    /// The boot architecture it maps to, if any.
    pub arch: Option<BootArch>,
    /// Whether the client was taken to run iPXE already (user class `iPXE`).
    pub ipxe: bool,
    /// The bootenv it boots.
    pub bootenv: String,
    /// Why that bootenv.
    pub bootenv_reason: String,
    /// `loader`, `http_loader`, `script`, `address_only`, `local` or `ignore`.
    pub decision: String,
    /// The TFTP file or URL DHCP hands it (none for address_only, local, ignore).
    pub boot_file: Option<String>,
    /// Every step of the reasoning, in order.
    pub why: Vec<String>,
    /// The loader chain it boots through: `ipxe`, or `grub` (the signed
    /// shim and GRUB of a Secure Boot machine).
    pub loader: String,
    /// The iPXE script it would fetch, when the decision is `script`.
    pub script: Option<String>,
    /// The GRUB config (`grub/grub.cfg-<mac>` by TFTP) it would read, when
    /// it is handed the signed shim.
    pub grub_config: Option<String>,
    /// Why the script cannot be rendered, when it cannot.
    pub script_error: Option<String>,
    /// The config scripts it runs once booted into `bootenv`, in order, each
    /// with why (its bootenv lists it, or its header selects the node).
    pub config_scripts: Vec<ConfigScript>,
    /// The secrets (files of `secrets_dir`) that its config scripts and the
    /// cloud-init and answer templates name: what a node with its token
    /// could read, once per boot.
    pub secrets: Vec<String>,
}

/// What explain shows where a node token would be: a live one is never
/// shown (each boot script carries a new one).
pub const NODE_TOKEN_PLACEHOLDER: &str = "<node-token>";

/// Everything [`explain`] needs besides the client.
pub struct ExplainContext<'a> {
    pub catalog: &'a Catalog,
    pub loaders: &'a LoaderMap,
    pub urls: &'a Urls,
    pub default_bootenv: &'a str,
    pub now: Timestamp,
}

/// What `client` is handed right now: `node` is its record, `None` when the
/// MAC is unknown (it would get a new record with the default bootenv).
pub fn explain(client: &ClientInfo, node: Option<&Node>, cx: &ExplainContext<'_>) -> Explanation {
    let mut why = Vec::new();
    let known = node.is_some();
    let mut record = match node {
        Some(n) => n.clone(),
        None => {
            why.push(format!(
                "{} is unknown: its first DHCP packet creates a record in state discovered with the default bootenv `{}` (unless its subnet ignores unknown clients)",
                client.mac, cx.default_bootenv
            ));
            Node::discovered(client.mac, cx.default_bootenv, String::new(), cx.now)
        }
    };
    // Whoever may read the API must not get a live credential from it:
    // every boot script carries a token of its own anyway.
    record.token = NODE_TOKEN_PLACEHOLDER.to_string();
    let (bootenv, bootenv_reason) = bootenv_reason(&record, cx.now);
    // The record as it boots now: an expired next-boot bootenv no longer counts.
    let mut view = record.clone();
    if bootenv != record.next_bootenv.clone().unwrap_or_default() {
        view.next_bootenv = None;
        view.bootenv_expires = None;
    }
    let client_arch = client
        .arch
        .map(|a| a.to_string())
        .unwrap_or_else(|| "none".into());
    let arch = client.arch.and_then(ClientArch::boot_arch);
    match (client.arch, arch) {
        (Some(code), Some(a)) => why.push(format!("option 93 = {code}: boot architecture {a}")),
        (Some(code), None) => why.push(format!(
            "option 93 = {code}: rackboot boots no such architecture"
        )),
        (None, _) => why.push("no option 93: not a PXE client".into()),
    }
    why.push(format!("boots {bootenv_reason}"));

    let via = super::decide::loader_of(&view, cx.catalog, cx.now);
    let decision = decide_for_node(client, &view, via, cx.loaders, cx.urls, cx.now);
    let (kind, boot_file) = match &decision {
        Decision::Loader { path, .. } => {
            why.push(if client.is_ipxe {
                format!("an iPXE without HTTPS (old option ROM) is first given rackboot's loader `{path}` by TFTP")
            } else if via == Loader::Grub && client.arch.and_then(ClientArch::boot_arch) != Some(BootArch::Bios) {
                format!("boots through GRUB (loader = \"grub\", {}): the signed shim `{path}` by TFTP, then the signed GRUB beside it, then its own GRUB config", if record.loader.as_deref() == Some(GRUB_LOADER) { "its record" } else { "its bootenv" })
            } else if record.loader.as_deref() == Some(path.as_str()) {
                format!("not running iPXE yet: the node's own loader `{path}` by TFTP")
            } else {
                format!("not running iPXE yet: the first-stage loader `{path}` by TFTP")
            });
            ("loader", Some(path.clone()))
        }
        Decision::HttpLoader { url, .. } => {
            why.push(format!("UEFI HTTP boot: the loader by URL {url}"));
            ("http_loader", Some(url.clone()))
        }
        Decision::Script { url, .. } => {
            why.push(format!(
                "already running iPXE (user class iPXE): its script {url}"
            ));
            ("script", Some(url.clone()))
        }
        Decision::AddressOnly => {
            why.push("not a network-boot client: an address only".into());
            ("address_only", None)
        }
        Decision::Local { .. } => {
            why.push(format!(
                "bootenv `{LOCAL}` with boot.local_boot = \"no_boot_file\": an address and no boot file, so the firmware goes on to its disk"
            ));
            ("local", None)
        }
        Decision::Ignore { reason } => {
            why.push(format!("not answered: {reason}"));
            ("ignore", None)
        }
    };

    // What the node reads next: the iPXE script it asks for, or the GRUB
    // config the Secure Boot chain reads.
    let next_read = match decision {
        Decision::Script { arch, .. } => Some((Loader::Ipxe, arch)),
        Decision::Loader { arch, .. } if via == Loader::Grub && arch != BootArch::Bios => {
            Some((Loader::Grub, arch))
        }
        _ => None,
    };
    let (mut script, mut grub_config, mut script_error) = (None, None, None);
    if let Some((loader, arch)) = next_read {
        match render_script(
            loader,
            cx.catalog,
            &view,
            &bootenv,
            arch,
            &cx.urls.http_base,
        ) {
            Ok(s) if loader == Loader::Ipxe => script = Some(s.text),
            Ok(s) => grub_config = Some(s.text),
            Err(e) => script_error = Some(e.to_string()),
        }
    }
    let config_scripts: Vec<ConfigScript> = cx
        .catalog
        .scripts_for(&record, &bootenv)
        .into_iter()
        .map(|a| ConfigScript {
            script: a.script,
            reason: a.reason.to_string(),
        })
        .collect();
    let secrets = config_scripts
        .iter()
        .filter_map(|c| cx.catalog.script_source(&c.script))
        .flat_map(|text| crate::secrets::referenced(&text))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Explanation {
        config_scripts,
        secrets,
        mac: client.mac,
        known,
        client_arch,
        arch,
        ipxe: client.is_ipxe,
        bootenv,
        bootenv_reason,
        decision: kind.into(),
        boot_file,
        why,
        loader: via.as_str().into(),
        script,
        grub_config,
        script_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loaders of a config that names none.
    fn loaders() -> LoaderMap {
        LoaderMap::default()
    }

    fn urls() -> Urls {
        Urls {
            http_base: "http://10.0.0.1".into(),
        }
    }

    fn context<'a>(
        catalog: &'a Catalog,
        loaders: &'a LoaderMap,
        urls: &'a Urls,
    ) -> ExplainContext<'a> {
        ExplainContext {
            catalog,
            loaders,
            urls,
            default_bootenv: "discovery",
            now: Timestamp(0),
        }
    }

    #[test]
    fn the_effective_bootenv_honours_next_and_its_expiry() {
        let mut n = Node::discovered(
            "52:54:00:00:00:01".parse().unwrap(),
            "discovery",
            "t".into(),
            Timestamp(0),
        );
        assert_eq!(bootenv_reason(&n, Timestamp(10)).0, "discovery");
        n.next_bootenv = Some("rescue".into());
        assert_eq!(bootenv_reason(&n, Timestamp(10)).0, "rescue");
        n.bootenv_expires = Some(Timestamp(20));
        assert_eq!(bootenv_reason(&n, Timestamp(10)).0, "rescue");
        let (b, why) = bootenv_reason(&n, Timestamp(20));
        assert_eq!(b, "discovery");
        assert!(why.contains("expired"), "{why}");
    }

    #[test]
    fn an_unknown_bios_client_gets_the_default_bootenvs_loader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("bootenvs")).unwrap();
        std::fs::write(
            p.join("bootenvs/discovery.toml"),
            "[arch.bios]\nlocal = \"exit\"\n",
        )
        .unwrap();
        let catalog =
            Catalog::load(&p.join("bootenvs"), &p.join("scripts"), p, "discovery").unwrap();
        let (loaders, urls) = (loaders(), urls());
        let cx = context(&catalog, &loaders, &urls);
        let mut client = ClientInfo {
            mac: "52:54:00:00:00:09".parse().unwrap(),
            arch: Some(ClientArch(0)),
            vendor_class: Some("PXEClient:Arch:00000".into()),
            user_class: None,
            is_ipxe: false,
            ipxe_features: vec![],
            relay: None,
        };
        let e = explain(&client, None, &cx);
        assert!(!e.known);
        assert_eq!(
            (e.decision.as_str(), e.boot_file.as_deref()),
            ("loader", Some("undionly.kpxe"))
        );
        assert!(e.why[0].contains("unknown"), "{:?}", e.why);
        client.is_ipxe = true;
        let e = explain(&client, None, &cx);
        assert_eq!(e.decision, "script");
        assert!(e.script.unwrap().ends_with("exit\n"));
    }

    #[test]
    fn explain_shows_no_live_token_and_names_the_secrets_of_the_nodes_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["bootenvs", "scripts", "assets"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::write(p.join("assets/vmlinuz"), b"k").unwrap();
        std::fs::write(
            p.join("bootenvs/discovery.toml"),
            "scripts = [\"keys.sh\"]\n[arch.bios]\nkernel = \"vmlinuz\"\ncmdline = \"rackboot.token={{ node.token }}\"\n",
        )
        .unwrap();
        std::fs::write(
            p.join("scripts/keys.sh"),
            "#!/bin/sh\necho '{{ secret(\"builder-key\") }}' > /etc/builder.key\n",
        )
        .unwrap();
        let catalog = Catalog::load_test_tree(p).unwrap();
        let (loaders, urls) = (loaders(), urls());
        let cx = context(&catalog, &loaders, &urls);
        let node = Node::discovered(
            "52:54:00:00:00:0a".parse().unwrap(),
            "discovery",
            "0123456789abcdef0123456789abcdef".into(),
            Timestamp(0),
        );
        let client = ClientInfo {
            mac: node.mac,
            arch: Some(ClientArch(0)),
            vendor_class: Some("PXEClient:Arch:00000".into()),
            user_class: Some("iPXE".into()),
            is_ipxe: true,
            ipxe_features: vec![],
            relay: None,
        };
        let e = explain(&client, Some(&node), &cx);
        let script = e.script.unwrap();
        assert!(script.contains("rackboot.token=<node-token>"), "{script}");
        assert!(!script.contains(&node.token), "{script}");
        assert_eq!(e.secrets, ["builder-key"]);
    }
}
