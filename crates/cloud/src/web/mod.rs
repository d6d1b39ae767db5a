//! What the browser and API surfaces share: the client's address, bounded bodies, browser forms
//! and pages, and the connection-level server.

pub mod audit_export;
pub mod body;
pub mod browser_form;
pub mod client;
pub mod failure;
pub mod metrics_endpoint;
pub mod pages;
pub mod server;
