pub mod api;
pub mod lab;
pub mod server;
