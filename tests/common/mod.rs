pub mod api;
pub mod lab;
pub mod server;
pub mod vm_watch;
