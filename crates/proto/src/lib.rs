//! The agent <-> cloud protocol and the REST wire types, with no IO.
//!
//! * [`frame`]: versioned frames and their size and shape limits.
//! * [`session`]: the two ends of a connection as state machines fed with bytes and time.
//! * [`sealing`]: passwords sealed to the agent with HPKE, bound to request, operation and user.
//! * [`intent`]: an operation before it is sealed, which seals itself to the chosen agent.
//! * [`sync`]: users and groups streamed from the directory, with a cursor the cloud keeps.
//! * [`result`]: the one stable set of result codes every layer speaks.
//! * [`api`]: request and response bodies of the admin REST API.

pub mod api;
mod encoding;
mod error;
pub mod events;
pub mod frame;
pub mod identity;
pub mod ids;
pub mod intent;
pub mod operation;
pub mod result;
mod schema;
pub mod sealing;
pub mod secret;
pub mod session;
pub mod sync;
pub mod time;

pub use error::ProtoError;
pub use writeback_policy::{PasswordPolicy, PolicyReason, PolicySource};
