use thiserror::Error;

/// Everything that can go wrong in the protocol crate. Messages never carry frame contents,
/// because a frame may hold a sealed password or a registration token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame of {size} bytes is larger than the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    MalformedFrame(String),
    #[error("unsupported protocol version {got}; this side speaks version {supported}")]
    UnsupportedVersion { got: u64, supported: u16 },
    #[error("invalid {what}: {problem}")]
    InvalidValue { what: &'static str, problem: String },
    #[error("could not seal the secret to the agent's key")]
    Seal,
    #[error("sealed secret does not open under this key, request, operation and user")]
    Open,
    #[error("sealed secret was made for key {got}, but the agent holds {held}")]
    UnknownSealingKey { got: String, held: String },
    #[error("signature does not verify")]
    BadSignature,
    #[error("the system random number generator failed")]
    Randomness,
}
