//! The code that calls the store and policy together, so that a rule is
//! enforced in one place whichever protocol or endpoint asks:
//!
//! - [`admin`]: admins' changes to node records (create, patch, bulk,
//!   import, delete), each through the one protection check and audited.

pub mod admin;
