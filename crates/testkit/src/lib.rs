//! Test infrastructure: a real Samba AD domain controller per test binary
//! ([`domain_controller`]), the product assembled around it ([`stack`]), and the log and secret
//! bookkeeping that lets the test run prove no password reached a log ([`logs`]), headless
//! Chromium for the console's and portal's pages ([`browser`]), and the real mail and SMS servers
//! the portal's codes go to ([`mail`], [`sms`]). Test code, so
//! failures are reported with `anyhow` rather than typed errors.

pub mod browser;
pub mod domain_controller;
pub mod logs;
pub mod mail;
pub mod name_server;
pub mod portal;
pub mod sms;
pub mod stack;
pub mod tls_proxy;
pub mod web;

pub use domain_controller::{DomainController, NewPasswordSettings, NewUser};
pub use stack::Stack;
