pub mod api;
pub mod lab;
pub mod netns;
pub mod server;
pub mod setup;
pub mod vm_watch;
