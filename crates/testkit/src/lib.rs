//! Test infrastructure: a real Samba AD domain controller per test binary, and (in [`stack`]) the
//! cloud in-process with a real agent process attached to it. Test code, so failures are reported
//! with `anyhow` rather than typed errors.

pub mod domain_controller;

pub use domain_controller::{DomainController, NewPasswordSettings, NewUser};
