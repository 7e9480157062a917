pub mod api;
pub mod bmc;
pub mod lab;
pub mod netns;
pub mod rollout;
pub mod server;
pub mod setup;
pub mod vm_watch;
