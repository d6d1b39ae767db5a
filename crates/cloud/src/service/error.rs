//! The cloud's one error type for what is not the caller's fault or the caller's input.

use thiserror::Error;
use writeback_store::StoreError;
use writeback_tls::TlsError;

#[derive(Debug, Error)]
pub enum CloudError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    InvalidInput(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a settings change was not stored.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// Every problem, in words an administrator can act on; nothing was stored.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CloudError {
    let context = context.into();
    move |source| CloudError::Io { context, source }
}
