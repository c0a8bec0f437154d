//! The HTTP edge both servers share, so the artifact server and the vend server
//! refuse hostile clients the same way.

pub mod body;
pub mod guard;
pub mod listener;
pub mod recent;
pub mod tls;

pub use listener::{Limits, LimitsError, serve};
pub use tls::{Tls, TlsError};
