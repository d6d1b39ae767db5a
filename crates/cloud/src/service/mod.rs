//! The cloud's use cases, with no HTTP, template or axum type: the API, the console, the portal
//! and the agent socket call these and render their answers in their own words.
//!
//! * [`writeback`]: one entry for reset, change, unlock and verify; a typed intent in, a typed
//!   outcome out.
//! * [`audit`]: the audit log's actions, and the only place its rows are made.
//! * [`self_service`]: the portal's rules: settings, account lookup, scope, methods, proofs.
//! * [`administrator_sign_in`], [`administration`]: administrators and their sessions.
//! * [`agents`], [`directory`], [`directory_sync`], [`health`]: agents, the synced copy of each
//!   directory, and their health.
//! * [`notify`]: mail, and the port text messages go through.
//! * [`relay`]: the connected agents and the requests in flight to them.

pub mod administration;
pub mod administrator_sign_in;
pub mod agents;
pub mod audit;
pub mod audit_log;
pub mod audit_retention;
pub mod auth;
pub mod cluster;
pub mod directory;
pub mod directory_sync;
pub mod error;
pub mod expiry;
pub mod hashing;
pub mod health;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod notify;
pub mod relay;
pub mod screening;
pub mod secrets;
pub mod self_service;
pub mod state;
pub mod totp;
pub mod writeback;
