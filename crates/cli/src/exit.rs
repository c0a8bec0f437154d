//! Exit codes (documented in docs/CLI.md) and the error that carries one: every
//! command module reports failures through [`fail`], and `main` turns them into the
//! process's exit status.

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const CONFLICT: u8 = 4;
pub const INTEGRITY: u8 = 5;
pub const UNREACHABLE: u8 = 6;
/// The server refused to say who the caller is (401: no token, or one it does not
/// accept), or no token could be got from the CI runner.
pub const UNAUTHENTICATED: u8 = 7;
/// The server knows the caller, who holds no grant for the action (403).
pub const FORBIDDEN: u8 = 8;
/// Stopped by SIGINT or SIGTERM after cleaning up (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// An error that knows which exit code it means.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        message: message.into(),
    }
    .into()
}
