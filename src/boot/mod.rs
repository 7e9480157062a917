//! Boot policy: which client gets what, and what a node's script says.
//!
//! Pure functions over plain data: no sockets, no store, no clock. The
//! protocol modules ask; this module answers.

pub mod address;
pub mod admission;
pub mod assign;
pub mod bootenv;
pub mod catalog;
pub mod decide;
pub mod diagnose;
pub mod edit;
pub mod explain;
pub mod lifecycle;
pub mod script;

pub use admission::{Admission, Limits, Verdict};
pub use bootenv::{ArchBoot, AssetRole, Bootenv, Loader, LocalMethod};
pub use catalog::{Catalog, CatalogCell, CatalogError, Rejection, TemplateContext};
pub use decide::{BootFile, Decision, GRUB_LOADER, decide, decide_for_node, loader_of};
pub use diagnose::{HEARTBEAT_MIN, Stall, Timeouts, diagnose, stall_deadline};
pub use edit::{
    FieldChange, FieldError, Guarded, NodeInput, NodePatch, Protected, ValidPatch, changes, guard,
};
pub use explain::{ExplainContext, Explanation, bootenv_reason, explain};
pub use lifecycle::{BootenvChange, Choice, Effective, Progress, effective_bootenv, next_state};
pub use script::{
    GRUB_MENU, RenderedScript, ScriptError, WaitReason, grub_config_mac, is_grub_menu,
    render_grub_wait, render_script, render_wait,
};
