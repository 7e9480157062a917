//! rackboot: a PXE network boot appliance. One process serves DHCPv4, TFTP,
//! HTTP and DNS on a boot network and decides, per MAC, what each machine boots.
//!
//! Crate map (one boot reads as one path through these):
//! - [`model`]: plain domain types (MAC, architectures, node records, events).
//! - [`config`]: the configuration file, parsed then validated.
//! - [`boot`]: policy, pure: which loader or script a client gets, bootenvs,
//!   iPXE script rendering, node state transitions, what an admin's edit of a
//!   node means (`edit`), and why a client gets what it gets (`explain`).
//! - [`control`]: the code that calls store and policy together: admin
//!   changes (protection, audit), admission of a MAC, and the timeline
//!   writer shared by the protocols (typed events, the changes they imply),
//!   one place each.
//! - [`store`]: node records, leases and events behind one trait (embedded SQLite).
//! - [`dhcp`], [`tftp`], [`http`], [`dns`]: one protocol each; they turn the wire
//!   into plain data, ask policy, and answer. No bootenv logic in them.
//! - [`names`]: hostname ↔ address of every node, kept current by the store,
//!   read by DNS (and the SOA serial that says it changed).
//! - [`metrics`]: the Prometheus registry served at `/metrics`; each protocol declares and
//!   counts its own families in its `metrics` module.
//! - [`routes`]: every URL shape rackboot serves or hands out, and its builder.
//! - [`log`]: the log's format: one event a line, control characters that
//!   came from the network escaped.
//! - [`contain`]: a panic while handling one request costs that request, not the service.
//! - [`beneath`]: opening a file by a name from outside without leaving its
//!   folder (no symbolic links, no `..`): TFTP, HTTP assets, templates, drop folder.
//! - [`privileges`]: started as root, `serve` becomes `[service] user` once
//!   its sockets are bound.
//! - [`service`]: binds the sockets, starts the servers, stops them on one token.
//! - [`sweep`]: the background pass that reverts expired bootenv leases and
//!   marks stalled boots `failed`/`unreachable` with their diagnosis.
//! - [`assets`]: importing kernels and initrds into the assets directory by
//!   sha256, after checking the kernel's architecture from its header, and
//!   naming them in a bootenv file only once the result is known to load.
//! - [`storm`]: `rackboot storm`, a synthetic fleet booting against a PXE
//!   server (its own DHCP, TFTP and HTTP clients; none of the server code).
//! - [`cli`]: the `rackboot` command.
//! - `fuzzing` (hidden): the bodies of the fuzz targets in `fuzz/`, one per
//!   parser of untrusted input; `tests/fuzz_corpus.rs` replays their corpora.

pub mod assets;
pub mod beneath;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod config;
pub mod contain;
pub mod control;
pub mod dhcp;
pub mod dns;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod names;
pub mod nodes;
pub mod privileges;
pub mod reload;
pub mod routes;
pub mod secrets;
pub mod service;
pub mod store;
pub mod storm;
pub mod sweep;
pub mod text_file;
pub mod tftp;
pub mod udp_buffer;
