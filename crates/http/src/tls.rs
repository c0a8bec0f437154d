//! TLS for both servers: a certificate chain and its private key from PEM files, read
//! again when either file changes, so that short-lived certificates are renewed in
//! place without a restart. A new connection gets the pair loaded at the time; one
//! already open keeps the pair it was accepted with.
//!
//! The files are looked at (size, modification time and inode, no read) at most once a
//! second, when a connection is accepted. A changed pair that cannot be used — a file
//! caught half written, a key that is not the certificate's — is refused with a warning
//! and the pair in service stays; it is tried again once either file changes again, so
//! a renewal that writes the two files one after the other is picked up when the
//! second lands.
//!
//! Only the aws-lc-rs provider is used, the one the HTTP clients of this workspace
//! already build.

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at, at most.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate chain: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("the key in {key} does not serve the certificate in {cert}: {source}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The certificate and key files a server serves TLS with, reloaded when they change.
/// Clones share one pair.
#[derive(Clone)]
pub struct Tls(Arc<Reloading>);

struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

struct State {
    acceptor: TlsAcceptor,
    /// What the files looked like when the pair in service was read.
    loaded: Stamp,
    /// What they looked like at the last reload that failed, so it is not retried
    /// (and warned about) every second until they change again.
    refused: Option<Stamp>,
    checked: Instant,
}

/// Modification time, size and inode of both files (a file renamed into place is a
/// new inode even within the clock's resolution); `None` for a file that cannot be
/// looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    cert: Option<(SystemTime, u64, u64)>,
    key: Option<(SystemTime, u64, u64)>,
}

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Stamp {
        let look = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
        };
        Stamp {
            cert: look(cert),
            key: look(key),
        }
    }
}

impl Tls {
    /// Reads the pair once; a pair that cannot be served now is a configuration error.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let loaded = Stamp::of(cert, key);
        let acceptor = acceptor(cert, key)?;
        Ok(Tls(Arc::new(Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            state: Mutex::new(State {
                acceptor,
                loaded,
                refused: None,
                checked: Instant::now(),
            }),
        })))
    }

    /// The acceptor for a connection accepted now, with the pair reread first if the
    /// files changed.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor_at(Instant::now())
    }

    fn acceptor_at(&self, now: Instant) -> TlsAcceptor {
        let r = &self.0;
        let mut state = r.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(state.checked) >= CHECK_INTERVAL {
            state.checked = now;
            let stamp = Stamp::of(&r.cert, &r.key);
            if stamp != state.loaded && Some(stamp) != state.refused {
                match acceptor(&r.cert, &r.key) {
                    Ok(acceptor) => {
                        state.acceptor = acceptor;
                        state.loaded = stamp;
                        state.refused = None;
                        tracing::info!(cert = %r.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        state.refused = Some(stamp);
                        tracing::warn!(error = %e, "TLS certificate not reloaded: still serving the previous one");
                    }
                }
            }
        }
        state.acceptor.clone()
    }
}

/// Paths only: nothing of the key.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.0.cert)
            .field("key", &self.0.key)
            .finish()
    }
}

/// The same files loaded by the same call: what `Limits` comparisons need.
impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Tls {}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::BadKey {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let unusable = |source| TlsError::Unusable {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        // Checks that the key is the certificate's.
        .with_single_cert(chain, private)
        .map_err(unusable)?;
    // The listener speaks HTTP/1.1 only (see `listener`); saying so keeps clients
    // that offer h2 from trying it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests;
