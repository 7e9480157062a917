//! Renders what a node's loader fetches next: the iPXE script (over HTTP),
//! or, on the Secure Boot chain, the GRUB config (over TFTP), from the same
//! bootenv, command line template and once-only and expiring rules.

use std::fmt::Write;

use super::bootenv::{ArchBoot, Loader, LocalMethod};
use super::catalog::{Catalog, RenderError, TemplateContext};
use crate::model::{BootArch, Mac, Node};
use crate::routes;

/// Why no script can be rendered for a node.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("node {mac}: bootenv `{bootenv}` does not exist")]
    UnknownBootenv { mac: String, bootenv: String },
    #[error("node {mac}: bootenv `{bootenv}` has nothing for architecture {arch}")]
    NoArch {
        mac: String,
        bootenv: String,
        arch: BootArch,
    },
    #[error("node {mac}: {source}")]
    Render {
        mac: String,
        #[source]
        source: RenderError,
    },
}

/// What the script makes the node fetch, for the timeline and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedScript {
    pub text: String,
    /// The bootenv actually rendered.
    pub bootenv: String,
    /// `None` for a local boot.
    pub kernel: Option<String>,
    /// The asset the script fetches last (its last initrd, else its
    /// kernel): once that has gone out in full, the node's boot slot is free
    /// again ([`super::admission`]). `None` for a local boot.
    pub last_fetch: Option<String>,
}

/// What `bootenv` boots on `arch`, or why nothing (naming the node).
fn arch_boot<'c>(
    catalog: &'c Catalog,
    mac: &str,
    bootenv: &str,
    arch: BootArch,
) -> Result<&'c ArchBoot, ScriptError> {
    let b = catalog
        .get(bootenv)
        .ok_or_else(|| ScriptError::UnknownBootenv {
            mac: mac.to_string(),
            bootenv: bootenv.to_string(),
        })?;
    b.for_arch(arch).ok_or_else(|| ScriptError::NoArch {
        mac: mac.to_string(),
        bootenv: bootenv.to_string(),
        arch,
    })
}

/// The bootenv's kernel command line, rendered for `node`.
fn kernel_args(
    catalog: &Catalog,
    node: &Node,
    bootenv: &str,
    arch: BootArch,
    server_url: &str,
) -> Result<String, ScriptError> {
    let ctx = TemplateContext::new(server_url, node, bootenv, arch);
    catalog
        .render_cmdline(bootenv, arch, &ctx)
        .map_err(|source| ScriptError::Render {
            mac: node.mac.to_string(),
            source,
        })
}

/// What a rendered script or config boots: the disk (`kernel` `None`), or
/// a kernel whose last file fetched frees the node's boot slot.
fn rendered(
    text: String,
    bootenv: &str,
    kernel: Option<&String>,
    initrds: &[String],
) -> RenderedScript {
    RenderedScript {
        text,
        bootenv: bootenv.to_string(),
        kernel: kernel.cloned(),
        last_fetch: kernel.map(|k| initrds.last().unwrap_or(k).clone()),
    }
}

/// What `node`'s loader `via` fetches to boot on `arch` into `bootenv`: the
/// iPXE script, or the GRUB config. Both boot the same kernel, initrds and
/// command line (or the disk); only how each loader says it differs.
pub fn render_script(
    via: Loader,
    catalog: &Catalog,
    node: &Node,
    bootenv: &str,
    arch: BootArch,
    server_url: &str,
) -> Result<RenderedScript, ScriptError> {
    let mac = node.mac.to_string();
    let boot = arch_boot(catalog, &mac, bootenv, arch)?;
    let mut s = String::with_capacity(512);
    if via == Loader::Ipxe {
        let _ = writeln!(s, "#!ipxe");
    }
    let _ = writeln!(s, "# rackboot: node {mac}, bootenv {bootenv}, arch {arch}");
    match boot {
        ArchBoot::Local(method) => {
            match via {
                Loader::Ipxe => ipxe_local(&mut s, &mac, method),
                Loader::Grub => grub_local(&mut s, &mac, arch, method),
            }
            Ok(rendered(s, bootenv, None, &[]))
        }
        ArchBoot::Kernel {
            kernel, initrds, ..
        } => {
            let args = kernel_args(catalog, node, bootenv, arch, server_url)?;
            match via {
                Loader::Ipxe => ipxe_kernel(&mut s, node.mac, server_url, kernel, initrds, &args),
                Loader::Grub => grub_kernel(&mut s, node.mac, kernel, initrds, &args),
            }
            Ok(rendered(s, bootenv, Some(kernel), initrds))
        }
    }
}

/// iPXE's local boot: `method` (`exit`, or `sanboot` of the first disk).
fn ipxe_local(s: &mut String, mac: &str, method: &LocalMethod) {
    let _ = writeln!(s, "echo rackboot: {mac} boots from its local disk");
    let _ = writeln!(s, "{}", method.ipxe());
}

/// iPXE's kernel boot, over HTTP from `server_url`.
///
/// Asset URLs carry the MAC so rackboot can put each fetch on the right
/// timeline even when it did not hand out the address (proxyDHCP, relays).
fn ipxe_kernel(
    s: &mut String,
    mac: Mac,
    server_url: &str,
    kernel: &str,
    initrds: &[String],
    args: &str,
) {
    // The Linux EFI stub loads initrds by the name given in `initrd=`,
    // which must equal the name iPXE registered the image under; BIOS
    // kernels ignore the argument. Naming them explicitly makes both work.
    let names: Vec<String> = (0..initrds.len()).map(|i| format!("initrd{i}")).collect();
    let mut kernel_args = String::new();
    for n in &names {
        let _ = write!(kernel_args, " initrd={n}");
    }
    if !args.is_empty() {
        kernel_args.push(' ');
        kernel_args.push_str(args);
    }
    let asset = |p: &str| routes::node_asset(server_url, p, &mac);
    // A busy server must slow a boot down, not fail it: retry the
    // whole fetch after a pause instead of dropping to a shell,
    // pausing longer each time (a rack retrying together must not
    // hammer a struggling server in lockstep: the pauses carry a
    // per-MAC jitter). iPXE has no arithmetic, so each pause is a
    // label and `rb_retry` names the next one.
    let delays = retry_delays(mac);
    let _ = writeln!(s, "set rb_retry retry1");
    let _ = writeln!(s, ":fetch");
    let _ = writeln!(
        s,
        "kernel --name kernel {}{kernel_args} || goto ${{rb_retry}}",
        asset(kernel)
    );
    for (i, initrd) in initrds.iter().enumerate() {
        let _ = writeln!(
            s,
            "initrd --name {} {} || goto ${{rb_retry}}",
            names[i],
            asset(initrd)
        );
    }
    let _ = writeln!(s, "boot || goto ${{rb_retry}}");
    for (i, d) in delays.iter().enumerate() {
        let n = i + 1;
        let next = (n + 1).min(delays.len());
        let _ = writeln!(s, ":retry{n}");
        let _ = writeln!(s, "set rb_retry retry{next}");
        let _ = writeln!(s, "imgfree");
        let _ = writeln!(s, "echo rackboot: fetch failed, retrying in {d} seconds");
        let _ = writeln!(s, "sleep {d}");
        let _ = writeln!(s, "goto fetch");
    }
}

/// Where GRUB reads configs from on rackboot's TFTP service: its `$prefix`
/// is the directory it was fetched from plus `/grub`, and shim and GRUB
/// are fetched from the root.
pub const GRUB_DIR: &str = "grub";

/// The `grub/grub.cfg` every GRUB reads first: GRUB looks for no per-MAC
/// file by itself, so this sends each to its own (`grub.cfg-<mac>`,
/// rendered by [`render_script`]) and, while that cannot be had, tries again.
pub const GRUB_MENU: &str = "\
# rackboot: each machine reads its own config, rendered for its MAC
echo \"rackboot: loading the config of $net_default_mac\"
configfile $prefix/grub.cfg-$net_default_mac
echo \"rackboot: no config for $net_default_mac from $net_default_server; trying again in 10 s\"
sleep 10
configfile $prefix/grub.cfg
";

/// The MAC a GRUB config path names: `grub/grub.cfg-52:54:00:aa:bb:cc`
/// (what [`GRUB_MENU`] asks for), also with dashes or pxelinux's `01-`.
pub fn grub_config_mac(path: &str) -> Option<Mac> {
    let name = path.trim_start_matches('/').strip_prefix(GRUB_DIR)?;
    let mac = name.strip_prefix("/grub.cfg-")?;
    let mac = mac
        .strip_prefix("01-")
        .filter(|m| m.len() == 17)
        .unwrap_or(mac);
    mac.parse().ok()
}

/// Whether `path` is the generic [`GRUB_MENU`].
pub fn is_grub_menu(path: &str) -> bool {
    path.trim_start_matches('/') == format!("{GRUB_DIR}/grub.cfg")
}

/// GRUB's local boot: the disk's own loader, else `method`.
fn grub_local(s: &mut String, mac: &str, arch: BootArch, method: &LocalMethod) {
    // GRUB's `exit` leaves OVMF in its setup menu rather than on
    // the next boot entry: the disk's own loader is chainloaded
    // (verified by shim, as the netboot chain was), and `exit`
    // is what is left where no disk has one.
    // The loader's device is set as `$root`: named in the path alone, the
    // started loader would look for its files on the network.
    let _ = write!(
        s,
        "echo \"rackboot: {mac} boots from its local disk\"
for rb_loader in {loaders}; do
  if search --no-floppy --file --set=rb_disk $rb_loader; then
    echo \"rackboot: starting ($rb_disk)$rb_loader\"
    set root=$rb_disk
    chainloader $rb_loader
    boot
  fi
done
{exit}
",
        loaders = local_loaders(arch).join(" "),
        exit = method.grub(),
    );
}

/// GRUB's kernel boot. Kernels and initrds are named by their path on
/// rackboot's TFTP service (GRUB's `$root` is the server it came from) and
/// come by TFTP: signed GRUB has no HTTP. Who fetches them is known by the
/// address rackboot leased.
fn grub_kernel(s: &mut String, mac: Mac, kernel: &str, initrds: &[String], args: &str) {
    let mut linux = format!("linux /{}", grub_word(kernel));
    for word in args.split_whitespace() {
        linux.push(' ');
        linux.push_str(&grub_word(word));
    }
    let mut initrd = String::from("initrd");
    for i in initrds {
        initrd.push_str(" /");
        initrd.push_str(&grub_word(i));
    }
    // A busy server must slow a boot down, not fail it: the fetch is
    // tried again after a pause, longer each time and with the
    // node's own jitter, and then every last pause for ever (GRUB
    // has loops but no arithmetic).
    let delays = retry_delays(mac);
    let last = delays[delays.len() - 1];
    let then_boot = if initrds.is_empty() {
        "boot".to_string()
    } else {
        format!("if {initrd}; then boot; fi")
    };
    let pauses: Vec<String> = delays.iter().map(u32::to_string).collect();
    let _ = write!(
        s,
        "function rb_boot {{
  echo \"rackboot: loading {kernel}\"
  if {linux}; then
    {then_boot}
  fi
}}
for rb_pause in {pauses}; do
  rb_boot
  echo \"rackboot: fetch failed, retrying in $rb_pause seconds\"
  sleep $rb_pause
done
while true; do
  rb_boot
  echo \"rackboot: fetch failed, retrying in {last} seconds\"
  sleep {last}
done
",
        kernel = grub_word(kernel),
        pauses = pauses.join(" "),
    );
}

/// Where a disk's own UEFI loader is, tried in order by a local boot
/// through GRUB: the shims the common distributions install, then the
/// removable-media path every UEFI firmware knows.
fn local_loaders(arch: BootArch) -> Vec<String> {
    let (shim, fallback) = match arch {
        BootArch::Arm64Efi => ("shimaa64.efi", "BOOTAA64.EFI"),
        _ => ("shimx64.efi", "BOOTX64.EFI"),
    };
    [
        "debian",
        "ubuntu",
        "redhat",
        "rocky",
        "almalinux",
        "centos",
        "fedora",
    ]
    .iter()
    .map(|d| format!("/EFI/{d}/{shim}"))
    .chain([format!("/EFI/BOOT/{fallback}")])
    .collect()
}

/// `word` as one word of a GRUB command: as it is when GRUB would read it
/// so, else in single quotes (GRUB's quoting, as a shell's).
fn grub_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=,@+%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The GRUB config that makes a node wait for a boot slot: the same as
/// [`render_wait`], reading its own config again after the pause.
pub fn render_grub_wait(mac: Mac, why: WaitReason) -> String {
    format!(
        "# {}\n\
         echo \"{}\"\n\
         sleep {}\n\
         configfile $prefix/grub.cfg-{mac}\n",
        why.headline(mac),
        why.message(mac),
        why.delay_secs,
    )
}

/// The pauses of a boot script's fetch retries, in seconds: backing off
/// from about 2 s to about 10 s (then that, again and again), with the
/// node's own jitter ([`super::admission::delay`]).
fn retry_delays(mac: Mac) -> [u32; 4] {
    [2, 3, 4, 5].map(|attempt| super::admission::delay(mac, attempt))
}

/// Why a node is told to wait instead of booting, for its console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReason {
    /// Nodes of its subnet fetching their kernel and initrds, and the limit.
    pub booting: u32,
    pub limit: u32,
    /// How many times in a row it was told to wait, this one included.
    pub attempt: u32,
    pub delay_secs: u32,
}

impl WaitReason {
    /// The script's first comment, the same for iPXE and GRUB.
    fn headline(&self, mac: Mac) -> String {
        format!(
            "rackboot: node {mac} waits for a boot slot, attempt {}",
            self.attempt
        )
    }

    /// What the node's console says while it waits, the same for iPXE and
    /// GRUB.
    fn message(&self, mac: Mac) -> String {
        let WaitReason {
            booting,
            limit,
            delay_secs,
            ..
        } = self;
        format!(
            "rackboot: {booting} of {limit} nodes on this subnet are booting; {mac} waits {delay_secs} s"
        )
    }
}

/// The iPXE script that makes a node wait for a boot slot: sleep, then
/// fetch its boot script (`script_url`) again, replacing this one (iPXE
/// would otherwise nest one script per attempt). If that fetch fails (the
/// server restarting), it keeps trying instead of dropping to a shell.
pub fn render_wait(mac: Mac, script_url: &str, why: WaitReason) -> String {
    let delay_secs = why.delay_secs;
    let mut s = String::with_capacity(384);
    let _ = writeln!(s, "#!ipxe");
    let _ = writeln!(s, "# {}", why.headline(mac));
    let _ = writeln!(s, "echo {}", why.message(mac));
    let _ = writeln!(s, "sleep {delay_secs}");
    let _ = writeln!(s, ":chain");
    let _ = writeln!(s, "chain --replace --autofree {script_url} || goto again");
    let _ = writeln!(s, ":again");
    let _ = writeln!(
        s,
        "echo rackboot: could not fetch the boot script, retrying in {delay_secs} s"
    );
    let _ = writeln!(s, "sleep {delay_secs}");
    let _ = writeln!(s, "goto chain");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["bootenvs", "scripts", "assets/arm64"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::write(p.join("assets/arm64/Image"), b"k").unwrap();
        std::fs::write(p.join("assets/arm64/initrd.img"), b"i").unwrap();
        std::fs::write(
            p.join("bootenvs/discovery.toml"),
            r#"[arch.arm64_efi]
kernel = "arm64/Image"
initrds = ["arm64/initrd.img"]
cmdline = "console=ttyAMA0 rackboot.url={{ server_url }} rackboot.token={{ node.token }}"
"#,
        )
        .unwrap();
        let c = Catalog::load_test_tree(p).unwrap();
        (dir, c)
    }

    fn node() -> Node {
        Node::sample()
    }

    /// The fixture's `discovery` on arm64, rendered for `via`.
    fn arm64_discovery(via: Loader) -> RenderedScript {
        let (_d, c) = fixture();
        render_script(
            via,
            &c,
            &node(),
            "discovery",
            BootArch::Arm64Efi,
            "http://10.0.0.1",
        )
        .unwrap()
    }

    /// `s` is `golden`, and boots the fixture's arm64 kernel and initrd.
    fn assert_arm64_discovery(s: &RenderedScript, golden: &str) {
        assert_eq!(s.text, golden);
        assert_eq!(s.kernel.as_deref(), Some("arm64/Image"));
        assert_eq!(s.last_fetch.as_deref(), Some("arm64/initrd.img"));
    }

    /// The fixture's `local` bootenv on `arch`, rendered for `via`: its
    /// text, having checked it boots no kernel.
    fn local_boot(via: Loader, arch: BootArch) -> String {
        let (_d, c) = fixture();
        let s = render_script(via, &c, &node(), "local", arch, "http://10.0.0.1").unwrap();
        assert_eq!(s.kernel, None);
        s.text
    }

    /// `text` contains `part`; the whole text is shown when not.
    fn assert_has(text: &str, part: &str) {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }

    /// A full subnet of `booting` nodes making the sample node wait.
    fn full(booting: u32, attempt: u32, delay_secs: u32) -> WaitReason {
        WaitReason {
            booting,
            limit: booting,
            attempt,
            delay_secs,
        }
    }

    #[test]
    fn kernel_boot_script_matches_golden() {
        let s = arm64_discovery(Loader::Ipxe);
        let golden = include_str!("testdata/arm64-discovery.ipxe");
        assert_arm64_discovery(&s, golden);
    }

    #[test]
    fn wait_script_matches_golden() {
        let s = render_wait(
            node().mac,
            "http://10.0.0.1/boot/52:54:00:aa:bb:cc.ipxe?arch=bios",
            full(32, 3, 5),
        );
        let golden = include_str!("testdata/wait.ipxe");
        assert_eq!(s, golden);
    }

    #[test]
    fn local_bootenv_exits_to_the_disk() {
        let s = local_boot(Loader::Ipxe, BootArch::Bios);
        assert!(s.ends_with("boots from its local disk\nexit\n"), "{s}");
    }

    #[test]
    fn grub_config_boots_the_same_kernel_by_tftp_and_retries() {
        let s = arm64_discovery(Loader::Grub);
        let golden = include_str!("testdata/arm64-discovery.grub.cfg");
        assert_arm64_discovery(&s, golden);
    }

    #[test]
    fn grub_wait_config_sleeps_then_reads_the_nodes_own_config_again() {
        let s = render_grub_wait(node().mac, full(4, 2, 7));
        let golden = include_str!("testdata/wait.grub.cfg");
        assert_eq!(s, golden);
    }

    #[test]
    fn grub_local_boot_chainloads_the_disks_loader_then_exits() {
        let s = local_boot(Loader::Grub, BootArch::X86_64Efi);
        assert_has(&s, "for rb_loader in /EFI/debian/shimx64.efi ");
        assert_has(&s, " /EFI/BOOT/BOOTX64.EFI; do\n");
        assert_has(&s, "    set root=$rb_disk\n    chainloader $rb_loader\n");
        assert!(s.ends_with("done\nexit\n"), "{s}");
    }

    #[test]
    fn grub_words_with_grub_metacharacters_are_quoted() {
        assert_eq!(
            grub_word("console=ttyS0,115200n8"),
            "console=ttyS0,115200n8"
        );
        assert_eq!(grub_word("a;b"), "'a;b'");
        assert_eq!(grub_word("$x"), "'$x'");
        assert_eq!(grub_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn grub_config_paths_name_their_mac() {
        let mac: Mac = "52:54:00:aa:bb:cc".parse().unwrap();
        for p in [
            "/grub/grub.cfg-52:54:00:aa:bb:cc",
            "grub/grub.cfg-52:54:00:aa:bb:cc",
            "/grub/grub.cfg-01-52-54-00-aa-bb-cc",
        ] {
            assert_eq!(grub_config_mac(p), Some(mac), "{p}");
        }
        for p in [
            "/grub/grub.cfg",
            "/grub/grub.cfg-",
            "/x/grub.cfg-52:54:00:aa:bb:cc",
            "/grub/grub.cfg-zz",
        ] {
            assert_eq!(grub_config_mac(p), None, "{p}");
        }
        assert!(is_grub_menu("/grub/grub.cfg") && is_grub_menu("grub/grub.cfg"));
        assert!(!is_grub_menu("/grub/grub.cfg-52:54:00:aa:bb:cc"));
    }

    #[test]
    fn missing_bootenv_or_arch_is_an_error_naming_the_node() {
        let (_d, c) = fixture();
        let e = render_script(
            Loader::Ipxe,
            &c,
            &node(),
            "nope",
            BootArch::Bios,
            "http://x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("52:54:00:aa:bb:cc") && e.to_string().contains("nope"));
        let e = render_script(
            Loader::Ipxe,
            &c,
            &node(),
            "discovery",
            BootArch::Bios,
            "http://x",
        )
        .unwrap_err();
        assert!(matches!(e, ScriptError::NoArch { .. }), "{e}");
    }
}
