//! Boot policy: which client gets what, and what a node's script says.
//!
//! Pure functions over plain data: no sockets, no store, no clock. The
//! protocol modules ask; this module answers.

pub mod assign;
pub mod bootenv;
pub mod catalog;
pub mod decide;
pub mod diagnose;
pub mod lifecycle;
pub mod script;

pub use bootenv::{ArchBoot, AssetRole, Bootenv, LocalMethod};
pub use catalog::{Catalog, CatalogCell, CatalogError, TemplateContext};
pub use decide::{Decision, Urls, decide, decide_for_node};
pub use diagnose::{HEARTBEAT_MIN, Stall, Timeouts, diagnose, stall_deadline};
pub use lifecycle::{BootenvChange, Choice, Effective, Progress, effective_bootenv, next_state};
pub use script::{RenderedScript, ScriptError, render_ipxe};
