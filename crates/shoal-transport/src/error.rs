//! Errors from setting a transport up. Errors from calls are [`shoal_core::Error`]s, which
//! carry a code the caller can act on.

use crate::config::ConfigError;

/// Why a server or socket could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding or configuring the socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The router could not be built.
    #[error(transparent)]
    Register(#[from] crate::service::RegisterError),
}
