//! Exit codes and the failure a command returns, classified by its code:
//! 0 ok, 1 an action ended in `error`, 2 usage or configuration error,
//! 3 runtime error. Here rather than in `app.rs` so the commands that live
//! outside it (`demo.rs`) reach them without going up.

use crate::config::ConfigError;

pub const OK: u8 = 0;
pub const ACTION_ERROR: u8 = 1;
pub const CONFIG_ERROR: u8 = 2;
pub const RUNTIME_ERROR: u8 = 3;

/// A failure, classified by its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line names something that is not there.
    #[error("{0}")]
    Usage(String),
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) | Failure::Usage(_) => CONFIG_ERROR,
            Failure::Runtime(_) => RUNTIME_ERROR,
        }
    }
}
