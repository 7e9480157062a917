//! Boot scripts as rendered for, and last handed to, each node.
//!
//! A rack booting asks for the same script many times (iPXE retries, nodes
//! waiting for a boot slot, reboot loops), and rendering one runs the
//! bootenv's command-line template. So each MAC's script is kept with what
//! it was rendered from: the catalog generation, the bootenv and arch, and
//! the node fields a template can see. Any change to one of those (an
//! admin's edit, a reload of bootenvs) renders it afresh.
//!
//! Scripts are rendered with [`TOKEN_PLACEHOLDER`] for the node token:
//! every script handed out carries a new token, substituted into the kept
//! render, so a fresh token costs a string replace, not a render.
//!
//! A script handed out is first *pending*: nothing it implies (the new
//! token, a once-only bootenv used up, the state `booting`, the timeline
//! events) happens until the node fetches the script's kernel from its own
//! address; then the boot *starts* and the script is the one last *handed*
//! (a node told to wait, or a client that never fetches the kernel, was
//! handed nothing). Kernel and initrd fetches and config pulls need that
//! script's bootenv (a once-only bootenv is gone from the record by then);
//! reading it here instead of from the node's timeline in the store saves
//! the store a commit per request. After a restart it is empty, and callers
//! fall back to the timeline.
//!
//! Owns neither what is rendered (`boot::script`) nor any event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::boot::{Choice, Loader, Progress, RenderedScript};
use crate::model::{BootArch, Mac, Node};

/// Stands for the node token in a kept render: lowercase letters and
/// digits, 32 of them like a real token, so URL-encoding leaves it as it is
/// and a template that checks the token's shape sees a token.
pub const TOKEN_PLACEHOLDER: &str = "rackbootnodetokenplaceholder0000";

/// `text` with each [`TOKEN_PLACEHOLDER`] made `token`. A token is as long
/// as the placeholder, so the copy is overwritten where the placeholder is
/// rather than rebuilt piece by piece (every boot script handed out pays it).
pub fn with_token(text: &str, token: &str) -> String {
    if token.len() != TOKEN_PLACEHOLDER.len() {
        return text.replace(TOKEN_PLACEHOLDER, token);
    }
    let mut out = text.as_bytes().to_vec();
    for (at, _) in text.match_indices(TOKEN_PLACEHOLDER) {
        out[at..at + token.len()].copy_from_slice(token.as_bytes());
    }
    // Valid UTF-8: ASCII placeholders replaced by a string of the same length
    // on char boundaries (the placeholder is ASCII, so its start and end are).
    String::from_utf8(out).unwrap_or_else(|_| text.replace(TOKEN_PLACEHOLDER, token))
}

/// A boot script handed to a node whose kernel has not been fetched yet.
#[derive(Debug, Clone)]
pub struct PendingBoot {
    /// The token in the script: the node's once its boot starts.
    pub token: String,
    pub script: Arc<RenderedScript>,
    pub arch: BootArch,
    /// Why its bootenv (a once-only one is used up when the boot starts).
    pub choice: Choice,
    /// `ScriptRendered` or `InstallerRendered`.
    pub progress: Progress,
}

/// MACs remembered; past it an arbitrary one is forgotten (its next
/// request renders again). Far above any rack, bounded against a flood.
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
pub struct ScriptCache {
    entries: Mutex<HashMap<Mac, Entry>>,
}

#[derive(Default)]
struct Entry {
    rendered: Option<Rendered>,
    handed: Option<Arc<RenderedScript>>,
    pending: Option<PendingBoot>,
}

struct Rendered {
    catalog_generation: u64,
    bootenv: String,
    arch: BootArch,
    /// An iPXE script or a GRUB config.
    via: Loader,
    /// The record the script was rendered from.
    node: Node,
    script: Arc<RenderedScript>,
}

impl ScriptCache {
    pub fn new() -> ScriptCache {
        ScriptCache::default()
    }

    /// The script of `node` booting `bootenv` on `arch` with catalog
    /// `catalog_generation`: the kept one if nothing it was rendered from
    /// has changed, else `render()`'s (kept for next time when it succeeds).
    pub fn get_or_render<E>(
        &self,
        node: &Node,
        bootenv: &str,
        arch: BootArch,
        via: Loader,
        catalog_generation: u64,
        render: impl FnOnce() -> Result<RenderedScript, E>,
    ) -> Result<Arc<RenderedScript>, E> {
        if let Some(r) = self.lock().get(&node.mac).and_then(|e| e.rendered.as_ref())
            && r.catalog_generation == catalog_generation
            && r.bootenv == bootenv
            && r.arch == arch
            && r.via == via
            && same_for_render(&r.node, node)
        {
            return Ok(r.script.clone());
        }
        // Rendered outside the lock: two requests racing both render, and
        // either result is right.
        let script = Arc::new(render()?);
        let mut entries = self.lock();
        make_room(&mut entries, node.mac);
        entries.entry(node.mac).or_default().rendered = Some(Rendered {
            catalog_generation,
            bootenv: bootenv.to_string(),
            arch,
            via,
            node: node.clone(),
            script: script.clone(),
        });
        Ok(script)
    }

    /// Keeps the boot script just handed to `mac` until its kernel is
    /// fetched (replacing an earlier one: the last script fetched is the
    /// one iPXE runs).
    pub fn pending(&self, mac: Mac, boot: PendingBoot) {
        let mut entries = self.lock();
        make_room(&mut entries, mac);
        entries.entry(mac).or_default().pending = Some(boot);
    }

    /// The pending boot of `mac` if `path` is its kernel: taken, so that it
    /// starts once.
    pub fn take_pending(&self, mac: Mac, path: &str) -> Option<PendingBoot> {
        let mut entries = self.lock();
        let entry = entries.get_mut(&mac)?;
        let is_kernel = entry
            .pending
            .as_ref()
            .is_some_and(|p| p.script.kernel.as_deref() == Some(path));
        if is_kernel {
            entry.pending.take()
        } else {
            None
        }
    }

    /// Gives back a pending boot taken by its kernel whose start could not
    /// be saved (the store cannot commit): the kernel fetched again (the
    /// script retries) starts it then. A script fetched since wins.
    pub fn put_back(&self, mac: Mac, boot: PendingBoot) {
        let mut entries = self.lock();
        make_room(&mut entries, mac);
        entries.entry(mac).or_default().pending.get_or_insert(boot);
    }

    /// Records that `script` went out to `mac` and its boot started.
    pub fn handed(&self, mac: Mac, script: Arc<RenderedScript>) {
        let mut entries = self.lock();
        make_room(&mut entries, mac);
        entries.entry(mac).or_default().handed = Some(script);
    }

    /// The script last handed to `mac` since rackboot started.
    pub fn last_handed(&self, mac: Mac) -> Option<Arc<RenderedScript>> {
        self.lock().get(&mac).and_then(|e| e.handed.clone())
    }

    /// Forgets `mac` (its record was deleted: a new record under the same
    /// MAC starts with nothing handed).
    pub fn forget(&self, mac: Mac) {
        self.lock().remove(&mac);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Mac, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn make_room(entries: &mut HashMap<Mac, Entry>, mac: Mac) {
    if entries.len() >= MAX_ENTRIES
        && !entries.contains_key(&mac)
        && let Some(victim) = entries.keys().next().copied()
    {
        entries.remove(&victim);
    }
}

/// Whether a script rendered from `a` is right for `b`: every field a
/// template or the renderer can see is equal. Spelled out field by field,
/// so a field added to [`Node`] does not compile here until someone decides
/// whether scripts depend on it.
fn same_for_render(a: &Node, b: &Node) -> bool {
    let Node {
        mac,
        hostname,
        ipv4,
        labels,
        params,
        bootenv,
        token,
        // Which bootenv is rendered is part of the key already (the
        // effective one, from bootenv, next_bootenv and the expiry).
        next_bootenv: _,
        bootenv_expires: _,
        // DHCP's business, not the script's.
        loader: _,
        // Checked when the record is edited, not when rendering.
        protected: _,
        // Change with every boot; no template sees them.
        booted_bootenv: _,
        state: _,
        state_reason: _,
        relay_info: _,
        uuid: _,
        boot_ipv4: _,
        last_seen: _,
        config_generation: _,
        // The arch rendered for is part of the key.
        arch: _,
        created: _,
        // Who made the record; no template sees it.
        origin: _,
        // Power control's; no template sees it.
        bmc: _,
    } = a;
    *mac == b.mac
        && *hostname == b.hostname
        && *ipv4 == b.ipv4
        && *labels == b.labels
        && *params == b.params
        && *bootenv == b.bootenv
        && *token == b.token
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::model::{NodeState, Timestamp};

    #[test]
    fn every_placeholder_becomes_the_token() {
        let p = TOKEN_PLACEHOLDER;
        let text = format!("kernel x rackboot.token={p} y\necho {p}\n");
        let token = "0123456789abcdef0123456789abcdef";
        assert_eq!(with_token(&text, token), text.replace(p, token));
        assert_eq!(with_token("no token here", token), "no token here");
        // A token of another length still replaces (the slow way).
        assert_eq!(with_token(&text, "t"), text.replace(p, "t"));
    }

    fn node() -> Node {
        Node::discovered(
            "52:54:00:00:00:09".parse().unwrap(),
            "discovery",
            "tok".into(),
            Timestamp(0),
        )
    }

    fn script(text: &str) -> RenderedScript {
        RenderedScript {
            text: text.into(),
            bootenv: "discovery".into(),
            kernel: Some("vmlinuz".into()),
            last_fetch: Some("initrd".into()),
        }
    }

    /// Renders through the cache, counting real renders.
    fn fetch(
        c: &ScriptCache,
        n: &Node,
        bootenv: &str,
        arch: BootArch,
        generation: u64,
        renders: &Cell<u32>,
    ) -> Arc<RenderedScript> {
        c.get_or_render(n, bootenv, arch, Loader::Ipxe, generation, || {
            renders.set(renders.get() + 1);
            Ok::<_, ()>(script(&format!("render {}", renders.get())))
        })
        .unwrap()
    }

    #[test]
    fn a_script_is_rendered_again_only_when_its_inputs_change() {
        let c = ScriptCache::new();
        let renders = Cell::new(0);
        let n = node();
        let a = fetch(&c, &n, "discovery", BootArch::Bios, 0, &renders);
        let b = fetch(&c, &n, "discovery", BootArch::Bios, 0, &renders);
        assert_eq!(renders.get(), 1);
        assert!(Arc::ptr_eq(&a, &b));

        // What changes with every boot does not matter.
        let mut busy = n.clone();
        busy.state = NodeState::Booting;
        busy.last_seen = Some(Timestamp(99));
        busy.state_reason = Some("boot script rendered".into());
        busy.config_generation = 4;
        fetch(&c, &busy, "discovery", BootArch::Bios, 0, &renders);
        assert_eq!(renders.get(), 1);

        // Each input that a script depends on does.
        type Edit = Box<dyn Fn(&mut Node)>;
        let mut edits: Vec<Edit> = vec![
            Box::new(|n| {
                n.params.insert("console".into(), "ttyS1".into());
            }),
            Box::new(|n| {
                n.labels.insert("rack".into(), "r7".into());
            }),
            Box::new(|n| n.hostname = "web-1".into()),
            Box::new(|n| n.ipv4 = Some("10.0.0.9".parse().unwrap())),
            Box::new(|n| n.bootenv = "rescue".into()),
            Box::new(|n| n.token = "other".into()),
        ];
        let mut current = busy.clone();
        for (i, edit) in edits.drain(..).enumerate() {
            edit(&mut current);
            fetch(&c, &current, "discovery", BootArch::Bios, 0, &renders);
            assert_eq!(renders.get(), 2 + i as u32, "edit {i}");
            fetch(&c, &current, "discovery", BootArch::Bios, 0, &renders);
            assert_eq!(renders.get(), 2 + i as u32, "edit {i}, kept");
        }
        let r = renders.get();
        fetch(&c, &current, "discovery", BootArch::X86_64Efi, 0, &renders);
        assert_eq!(renders.get(), r + 1, "another arch");
        fetch(&c, &current, "rescue", BootArch::X86_64Efi, 0, &renders);
        assert_eq!(renders.get(), r + 2, "another bootenv");
        fetch(&c, &current, "rescue", BootArch::X86_64Efi, 1, &renders);
        assert_eq!(renders.get(), r + 3, "a catalog reload");
        fetch(&c, &current, "rescue", BootArch::X86_64Efi, 1, &renders);
        assert_eq!(renders.get(), r + 3);
    }

    #[test]
    fn a_failed_render_is_not_kept() {
        let c = ScriptCache::new();
        let n = node();
        let e = c.get_or_render(&n, "discovery", BootArch::Bios, Loader::Ipxe, 0, || {
            Err("no such bootenv")
        });
        assert_eq!(e.unwrap_err(), "no such bootenv");
        let renders = Cell::new(0);
        fetch(&c, &n, "discovery", BootArch::Bios, 0, &renders);
        assert_eq!(renders.get(), 1);
    }

    /// A script handed out with `token`, waiting for its kernel.
    fn boot(token: &str) -> PendingBoot {
        PendingBoot {
            token: token.into(),
            script: Arc::new(script("s")),
            arch: BootArch::Bios,
            choice: Choice::Base,
            progress: Progress::ScriptRendered,
        }
    }

    #[test]
    fn a_pending_boot_is_taken_once_and_only_by_its_kernel() {
        let c = ScriptCache::new();
        let n = node();
        c.pending(n.mac, boot("first"));
        c.pending(n.mac, boot("second"));
        assert!(c.take_pending(n.mac, "initrd").is_none(), "not the kernel");
        assert_eq!(c.take_pending(n.mac, "vmlinuz").unwrap().token, "second");
        assert!(c.take_pending(n.mac, "vmlinuz").is_none(), "taken");
        assert!(c.last_handed(n.mac).is_none(), "pending is not handed");
    }

    #[test]
    fn a_boot_that_could_not_start_is_pending_again_unless_a_newer_script_went_out() {
        let c = ScriptCache::new();
        let n = node();
        c.pending(n.mac, boot("first"));
        let taken = c.take_pending(n.mac, "vmlinuz").unwrap();
        c.put_back(n.mac, taken);
        assert_eq!(c.take_pending(n.mac, "vmlinuz").unwrap().token, "first");
        c.put_back(n.mac, boot("first"));
        let taken = c.take_pending(n.mac, "vmlinuz").unwrap();
        c.pending(n.mac, boot("second"));
        c.put_back(n.mac, taken);
        assert_eq!(c.take_pending(n.mac, "vmlinuz").unwrap().token, "second");
    }

    #[test]
    fn handed_is_separate_from_rendered_and_forgotten_with_the_node() {
        let c = ScriptCache::new();
        let n = node();
        let renders = Cell::new(0);
        let s = fetch(&c, &n, "discovery", BootArch::Bios, 0, &renders);
        assert!(c.last_handed(n.mac).is_none(), "rendered, not handed yet");
        c.handed(n.mac, s.clone());
        assert_eq!(c.last_handed(n.mac).unwrap().bootenv, "discovery");
        c.forget(n.mac);
        assert!(c.last_handed(n.mac).is_none());
    }
}
