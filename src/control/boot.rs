//! What happens when iPXE fetches its boot script (`/boot/<mac>.ipxe`) and
//! then the kernel and initrds the script names (`/assets/...?mac=`), and
//! the boot slots ([`crate::boot::admission`]) taken by the one and freed
//! by the other.
//!
//! A boot script, and the node token in it, go only to the node's own
//! address ([`super::bind`]); where that binding is turned off, whether a
//! MAC may have a boot script at all is the appliance's one admission
//! decision ([`super::admit`]), as for DHCP.
//!
//! Fetching a script changes nothing: each script carries a new node token,
//! and the boot it describes starts when the node fetches its kernel
//! ([`Control::asset_fetched`]). Only then does the token become the
//! node's, a once-only bootenv get used up, the state move to `booting` and
//! the events get written. A local-boot script has no token and no kernel:
//! it takes effect when it is fetched.

use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::Control;
use super::admit::{Admitted, Place, Via};
use super::bind::Refusal;
use super::script_cache::{PendingBoot, TOKEN_PLACEHOLDER, with_token};
use crate::boot::{
    AssetRole, Choice, GRUB_MENU, Loader, Progress, RenderedScript, Verdict, WaitReason,
    effective_bootenv, grub_config_mac, is_grub_menu, lifecycle, render_grub_wait, render_script,
    render_wait,
};
use crate::model::{BootArch, EventData, Mac, Node, Timestamp};
use crate::routes;
use crate::store::{self, StoreError};

/// A boot script asked for.
pub struct ScriptAsk<'a> {
    pub mac: Mac,
    /// `?arch=`, for clients that came through another DHCP server.
    pub arch: Option<BootArch>,
    /// `?arch=` as written, kept in the URL of a script that waits.
    pub arch_text: Option<&'a str>,
    /// The address the request came from.
    pub peer: Option<Ipv4Addr>,
    /// iPXE asks for its script over HTTP; GRUB (the Secure Boot chain)
    /// for its config over TFTP.
    pub via: Loader,
}

/// The script to hand out.
pub enum Script {
    /// The node's boot script (with its new token, if it boots a kernel).
    Boot(String),
    /// The node's subnet has as many nodes fetching kernels as
    /// `[admission]` allows: a script that waits and asks again.
    Wait { text: String, subnet: String },
}

/// Why no boot script went out.
#[derive(Debug)]
pub enum ScriptRefused {
    /// Not from the node's own address (or rackboot knows none for it).
    NotItsAddress(Refusal),
    /// An unknown MAC where unknown clients are ignored (binding off).
    Unknown {
        place: String,
    },
    /// No `?arch=`, and the node never booted through rackboot's DHCP.
    ArchUnknown,
    /// The bootenv's template did not render for this node.
    Render(String),
    Store(StoreError),
}

impl From<StoreError> for ScriptRefused {
    fn from(e: StoreError) -> ScriptRefused {
        ScriptRefused::Store(e)
    }
}

/// What an asset fetch that names its node (`?mac=`) was to that node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AssetFetch {
    /// From the node's own address: recorded on its timeline.
    pub recorded: bool,
    /// The last asset of the node's boot script, asked for whole: once it
    /// is sent in full, [`Control::asset_sent`] frees the boot slot.
    pub last_of_boot: bool,
}

impl Control {
    /// The node's iPXE script, rendered for its architecture (the one its
    /// firmware announced over DHCP, or `?arch=`), for the node's own
    /// address only: from any other address a refusal and nothing else (no
    /// record made, no event). Rendered once per change of what it depends
    /// on ([`super::script_cache`]); its boot slot is taken here (the
    /// node's own address asked, and its kernel fetch is next).
    pub async fn script_fetched(
        &self,
        ask: ScriptAsk<'_>,
        now: Timestamp,
    ) -> Result<Script, ScriptRefused> {
        let ScriptAsk { mac, peer, .. } = ask;
        let node = if self.binding.enforced() {
            // No record is made here: an unknown MAC has no address to bind
            // a script to (its first DHCP packet makes its record).
            let Some(node) = self.store.node(mac).await? else {
                return Err(ScriptRefused::NotItsAddress(Refusal::NoAddress));
            };
            if let Err(r) = self.binding.check(&node, peer).await? {
                return Err(ScriptRefused::NotItsAddress(r));
            }
            node
        } else {
            match self
                .door
                .admit(mac, Place::Peer(peer), Via::BootScript { from: peer }, now)
                .await?
            {
                Admitted::Known(node) | Admitted::New(node) => node,
                Admitted::Refused { place } => return Err(ScriptRefused::Unknown { place }),
            }
        };
        let arch = ask.arch.or(node.arch).ok_or(ScriptRefused::ArchUnknown)?;
        // A lease that ran out reverts before anything is rendered, so this
        // boot and the record agree even if the sweep has not come by yet.
        // (Checked on the copy first: most boots have no lease, and the
        // edit costs.)
        let node = if lifecycle::expire_lease(&node, now).is_some() {
            self.timeline
                .change_bootenv(mac, move |n| lifecycle::expire_lease(n, now))
                .await?
                .unwrap_or(node)
        } else {
            node
        };
        let effective = effective_bootenv(&node, now);
        let (catalog, generation) = self.catalog.snapshot();
        // Rendered (and kept) with a stand-in for the token: each script
        // handed out gets its own. (Nothing below needs the record's.)
        let mut node = node;
        node.token = TOKEN_PLACEHOLDER.to_string();
        let template_node = &node;
        let rendered = self
            .scripts
            .get_or_render(
                template_node,
                &effective.bootenv,
                arch,
                ask.via,
                generation,
                || {
                    render_script(
                        ask.via,
                        &catalog,
                        template_node,
                        &effective.bootenv,
                        arch,
                        &self.http_base,
                    )
                },
            )
            .map_err(|e| ScriptRefused::Render(e.to_string()))?;
        // Last seen in memory (the file only once a minute): lazy, no commit.
        self.store.touch_node(mac, Some(arch), now).await?;
        if rendered.kernel.is_none() {
            self.local_boot(&node, rendered.clone(), arch, effective.choice, now)
                .await?;
            return Ok(Script::Boot(rendered.text.clone()));
        }
        let verdict = self.admission().admit(mac, peer, now);
        if let Verdict::Wait {
            attempt,
            delay_secs,
            booting,
            limit,
            ahead,
        } = verdict
        {
            let subnet = {
                let a = self.admission();
                a.limits().pool_name(a.limits().pool_of(peer))
            };
            tracing::debug!(%mac, subnet, attempt, delay_secs, ahead, "boot slots full: told to wait");
            let why = WaitReason {
                booting,
                limit,
                attempt,
                delay_secs,
            };
            let text = match ask.via {
                Loader::Ipxe => {
                    let again = routes::boot_script(&self.http_base, &mac, ask.arch_text);
                    render_wait(mac, &again, why)
                }
                Loader::Grub => render_grub_wait(mac, why),
            };
            return Ok(Script::Wait { text, subnet });
        }
        let token = crate::nodes::new_token();
        let script = Arc::new(RenderedScript {
            text: with_token(&rendered.text, &token),
            bootenv: rendered.bootenv.clone(),
            kernel: rendered.kernel.clone(),
            last_fetch: rendered.last_fetch.clone(),
        });
        let progress = if catalog.get(&script.bootenv).is_some_and(|b| b.installer) {
            Progress::InstallerRendered
        } else {
            Progress::ScriptRendered
        };
        let text = script.text.clone();
        self.scripts.pending(
            mac,
            PendingBoot {
                token,
                script,
                arch,
                choice: effective.choice,
                progress,
            },
        );
        Ok(Script::Boot(text))
    }

    /// A file rackboot renders for a TFTP read of `path` from `peer`, `None`
    /// for one to read from the assets: the GRUB chain's generic
    /// `grub/grub.cfg`, and a node's own `grub/grub.cfg-<mac>`, its bootenv
    /// rendered for GRUB exactly as [`Control::script_fetched`] renders it
    /// for iPXE.
    pub async fn tftp_file(
        &self,
        path: &str,
        peer: Option<Ipv4Addr>,
        now: Timestamp,
    ) -> Option<Result<Cow<'static, [u8]>, ScriptRefused>> {
        if is_grub_menu(path) {
            return Some(Ok(Cow::Borrowed(GRUB_MENU.as_bytes())));
        }
        let mac = grub_config_mac(path)?;
        let ask = ScriptAsk {
            mac,
            arch: None,
            arch_text: None,
            peer,
            via: Loader::Grub,
        };
        Some(match self.script_fetched(ask, now).await {
            Ok(Script::Boot(text) | Script::Wait { text, .. }) => Ok(Cow::Owned(text.into_bytes())),
            Err(e) => Err(e),
        })
    }

    /// To the local disk: no token, no kernel to wait for. The boot it
    /// describes starts now (the record's booted bootenv written only when
    /// it does not say so already: a node booting from its disk does so
    /// again and again).
    async fn local_boot(
        &self,
        node: &Node,
        rendered: Arc<RenderedScript>,
        arch: BootArch,
        choice: Choice,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mac = node.mac;
        let bootenv = rendered.bootenv.clone();
        self.scripts.handed(mac, rendered);
        if node.booted_bootenv.as_deref() != Some(bootenv.as_str()) {
            let booted = bootenv.clone();
            store::update_fields(self.store.as_ref(), mac, |n| {
                n.booted_bootenv = Some(booted)
            })
            .await?;
        }
        self.timeline
            .record(
                mac,
                EventData::HttpScript {
                    bootenv: bootenv.clone(),
                    arch,
                    choice,
                },
            )
            .await;
        if choice == Choice::Once {
            self.timeline
                .change_bootenv(mac, move |n| lifecycle::after_render(n, &bootenv, now))
                .await?;
        }
        self.timeline.progress(mac, Progress::LocalRendered).await
    }

    /// A GET of `path` that names its node (`?mac=`), `ranged` when it asked
    /// for part of the file. From the node's own address it starts the boot
    /// of the script the node was handed when `path` is that script's
    /// kernel ([`Control::start_boot`]), and goes on the node's timeline as
    /// kernel, initrd or other asset. From any other address (assets are
    /// not secret, the file is served) nothing happens.
    pub async fn asset_fetched(
        &self,
        mac: Mac,
        path: &str,
        peer: Option<Ipv4Addr>,
        ranged: Option<String>,
        now: Timestamp,
    ) -> Result<AssetFetch, StoreError> {
        let Some((node, last_of_boot)) = self.boot_fetch(mac, path, peer, now).await? else {
            return Ok(AssetFetch::default());
        };
        let last_of_boot = last_of_boot && ranged.is_none();
        let path = path.to_string();
        let fetched = match self.asset_role(&node, &path) {
            Some(AssetRole::Kernel) => EventData::HttpKernel {
                path,
                range: ranged,
            },
            Some(AssetRole::Initrd) => EventData::HttpInitrd {
                path,
                range: ranged,
            },
            _ => EventData::HttpAsset {
                path,
                range: ranged,
            },
        };
        self.timeline.record(mac, fetched).await;
        Ok(AssetFetch {
            recorded: true,
            last_of_boot,
        })
    }

    /// What a fetch of `path` by `mac` from `peer` does to its boot, by
    /// HTTP or TFTP alike: from the node's own address, its boot starts when
    /// `path` is the kernel of the script or GRUB config it was handed, and
    /// the answer is its record and whether `path` is the last file of that
    /// boot. From any other address nothing happens (`None`).
    pub async fn boot_fetch(
        &self,
        mac: Mac,
        path: &str,
        peer: Option<Ipv4Addr>,
        now: Timestamp,
    ) -> Result<Option<(Node, bool)>, StoreError> {
        let Some(mut node) = self.store.node(mac).await? else {
            return Ok(None);
        };
        if let Err(r) = self.binding.check(&node, peer).await? {
            tracing::debug!(%mac, %path, reason = %r.explain(mac, peer), "asset fetch names a node it is not: served, not recorded");
            return Ok(None);
        }
        if let Some(boot) = self.scripts.take_pending(mac, path) {
            node = self.start_boot(mac, boot, now).await?;
        }
        let last_of_boot = self
            .scripts
            .last_handed(mac)
            .is_some_and(|s| s.last_fetch.as_deref() == Some(path));
        Ok(Some((node, last_of_boot)))
    }

    /// The last asset of `mac`'s boot went out in full (or its agent said
    /// it booted): its boot slot is free for the next node.
    pub fn boot_slot_done(&self, mac: Mac) {
        if self.admission().release(mac) {
            tracing::debug!(%mac, "kernel and initrds sent: boot slot free");
        }
    }

    /// Nodes fetching kernels now, per limited subnet, for `/metrics`.
    pub fn boots_in_flight(&self) -> Vec<(String, u32)> {
        let a = self.admission();
        let limits = a.limits();
        limits
            .limited()
            .map(|p| (limits.pool_name(p), a.booting(p)))
            .collect()
    }

    /// The node's boot starts: the kernel of the script it was handed is
    /// being fetched from its own address. The script's token becomes the
    /// node's (the one before dies; durable, so a restart keeps it) and its
    /// bootenv the one the record says the node booted, in one edit; a
    /// once-only bootenv is used up, the state moves on and the timeline
    /// says what was rendered. Returns the record with its boot started.
    async fn start_boot(
        &self,
        mac: Mac,
        boot: PendingBoot,
        now: Timestamp,
    ) -> Result<Node, StoreError> {
        let token = boot.token.clone();
        let booted = boot.script.bootenv.clone();
        let started = store::update_fields(self.store.as_ref(), mac, |n| {
            n.token = token;
            n.booted_bootenv = Some(booted);
        })
        .await;
        let mut node = match started {
            Ok(edited) => edited.after,
            Err(e) => {
                // Not started: the fetch fails, and the script's retry of it
                // starts the boot, with this script's token, once it can.
                self.scripts.put_back(mac, boot);
                return Err(e);
            }
        };
        self.scripts.handed(mac, boot.script.clone());
        self.timeline
            .record(
                mac,
                EventData::HttpScript {
                    bootenv: boot.script.bootenv.clone(),
                    arch: boot.arch,
                    choice: boot.choice,
                },
            )
            .await;
        if boot.choice == Choice::Once {
            let used = boot.script.bootenv.clone();
            if let Some(after) = self
                .timeline
                .change_bootenv(mac, move |n| lifecycle::after_render(n, &used, now))
                .await?
            {
                node = after;
            }
        }
        self.timeline.progress(mac, boot.progress).await?;
        Ok(node)
    }

    /// What `path` is to `node` in its current boot (a once-only bootenv is
    /// no longer in the record's bootenv fields by the time the kernel is
    /// fetched), for its timeline.
    fn asset_role(&self, node: &Node, path: &str) -> Option<AssetRole> {
        let bootenv = booted_bootenv(node);
        node.arch
            .and_then(|a| Some(self.catalog.current().get(&bootenv)?.role_of(a, path)))
    }
}

/// The bootenv the node booted: that of its current boot (a once-only
/// bootenv is already used up in the record by the time the node fetches
/// its kernel or pulls its config scripts), else, before its first boot
/// through rackboot, the one it boots now.
pub fn booted_bootenv(node: &Node) -> String {
    node.booted_bootenv
        .clone()
        .unwrap_or_else(|| effective_bootenv(node, Timestamp::now()).bootenv)
}
