pub mod api;
pub mod lab;
