//! Clients of services outside Writeback that speak HTTP, behind the ports the use cases name:
//! [`sms`] implements [`crate::service::notify::TextMessages`].

pub mod sms;
