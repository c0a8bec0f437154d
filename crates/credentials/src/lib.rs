//! Credentials for the S3 backend: one [`CredentialSource`] trait, one
//! [`RefreshingCache`] in front of every source, and the sources themselves (static
//! secret references, web identity, AssumeRole, container endpoint, credential_process,
//! a sidecar-written file). Time is the model's [`Timestamp`] on a replaceable [`Clock`].
//!
//! The cache refreshes ahead of expiry: when less than a window remains (the smaller of
//! 5 minutes and a third of the lifetime, unless configured), less a random part of a
//! fifth of the window so that replicas do not all refresh at once. One refresh runs at
//! a time; callers holding a still-valid credential keep using it meanwhile, callers
//! without one wait for it. A failed refresh keeps the last credential while it is
//! valid and is retried with backoff (1 s doubling to 60 s).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use artifactstore_model::secret::Secret;
use artifactstore_model::{Clock, Timestamp, random_below};

pub mod refusal;
pub mod sources;
pub mod sts_xml;

/// One set of credentials. Secrets stay [`Secret`]s until the signer needs them.
#[derive(Clone)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// `None`: long-lived (never refreshed).
    pub expires_at: Option<Timestamp>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a source could not produce credentials. Messages name files, URLs and codes,
/// never a secret or token.
#[derive(Clone, Debug, thiserror::Error)]
#[error("credential source {source_name}: {message}")]
pub struct SourceError {
    pub source_name: &'static str,
    pub message: String,
}

impl SourceError {
    pub fn new(source_name: &'static str, message: impl Into<String>) -> Self {
        SourceError {
            source_name,
            message: message.into(),
        }
    }
}

#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync {
    /// `static`, `web-identity`, `assume-role`, `container`, `process`, `file`.
    fn name(&self) -> &'static str;
    async fn fetch(&self) -> Result<Credential, SourceError>;
    /// Whether what `fetch` reads has changed since (a sidecar's file): the cache then
    /// fetches again before the credential is due. Must be cheap.
    fn changed(&self) -> bool {
        false
    }
}

/// When to refresh.
#[derive(Clone, Debug)]
pub struct RefreshPolicy {
    /// Refresh when less than this remains; `None`: the smaller of 5 min and a third
    /// of the credential's lifetime.
    pub window: Option<Duration>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            window: None,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

struct Entry {
    credential: Credential,
    /// When to start refreshing; `None` for long-lived credentials.
    refresh_at: Option<Timestamp>,
    /// Past this, the credential is not handed out (a little before its expiry, so a
    /// request signed with it does not arrive after it).
    usable_until: Option<Timestamp>,
}

struct RefreshState {
    not_before: Option<Timestamp>,
    backoff: Duration,
    last_error: Option<SourceError>,
}

/// Counters and the current expiry, for metrics and readiness.
#[derive(Default)]
pub struct CacheStats {
    pub refreshes: AtomicU64,
    pub failures: AtomicU64,
    pub forced: AtomicU64,
}

pub struct RefreshingCache {
    source: Arc<dyn CredentialSource>,
    clock: Arc<dyn Clock>,
    policy: RefreshPolicy,
    current: RwLock<Option<Arc<Entry>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Set by [`reject`](Self::reject): the upstream refused the current credential.
    rejected: AtomicBool,
    pub stats: CacheStats,
}

/// How long before its expiry a credential living `lifetime` is renewed by default:
/// the smaller of 5 minutes and a third of the lifetime. The one definition for every
/// layer that hands out or renews expiring credentials.
pub fn refresh_window(lifetime: Duration) -> Duration {
    (lifetime / 3).min(Duration::from_secs(300))
}

/// `window` plus a random part of up to a fifth of it, so that replicas given
/// credentials at the same moment do not all renew them at the same moment.
pub fn with_jitter(window: Duration) -> Duration {
    let fifth = u64::try_from(window.as_millis() / 5).unwrap_or(u64::MAX);
    window + Duration::from_millis(random_below(fifth.saturating_add(1)))
}

impl RefreshingCache {
    pub fn new(source: Arc<dyn CredentialSource>, policy: RefreshPolicy) -> Self {
        Self::with_clock(source, policy, artifactstore_model::clock::system_clock())
    }

    pub fn with_clock(
        source: Arc<dyn CredentialSource>,
        policy: RefreshPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        RefreshingCache {
            source,
            clock,
            policy,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState {
                not_before: None,
                backoff: Duration::ZERO,
                last_error: None,
            }),
            rejected: AtomicBool::new(false),
            stats: CacheStats::default(),
        }
    }

    pub fn source_name(&self) -> &'static str {
        self.source.name()
    }

    /// The expiry of the credential held now, if any and if it expires (a
    /// `SystemTime`, for callers that compare it with the system's clock).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.current
            .read()
            .unwrap()
            .as_ref()
            .and_then(|e| e.credential.expires_at)
            .map(Timestamp::to_system_time)
    }

    /// Whether a usable credential is held right now.
    pub fn has_valid(&self) -> bool {
        let now = self.clock.now();
        self.current
            .read()
            .unwrap()
            .as_ref()
            .is_some_and(|e| e.usable_until.is_none_or(|u| now < u))
    }

    /// The last refresh error, while no refresh has succeeded since.
    pub fn last_error(&self) -> Option<SourceError> {
        self.refresh
            .try_lock()
            .ok()
            .and_then(|s| s.last_error.clone())
    }

    fn entry(&self, credential: Credential, now: Timestamp) -> Entry {
        let (refresh_at, usable_until) = match credential.expires_at {
            None => (None, None),
            Some(exp) => {
                let lifetime = now.until(exp);
                // A configured window is capped at three quarters of the lifetime, so
                // that a credential is used for a while before it is renewed.
                let window = self
                    .policy
                    .window
                    .map_or_else(|| refresh_window(lifetime), |w| w.min(lifetime * 3 / 4));
                let margin = (lifetime / 10).min(Duration::from_secs(15));
                (
                    Some(exp.saturating_sub(with_jitter(window))),
                    Some(exp.saturating_sub(margin)),
                )
            }
        };
        Entry {
            credential,
            refresh_at,
            usable_until,
        }
    }

    /// A credential to sign with: the cached one, or a fresh one when it is due.
    pub async fn get(&self) -> Result<Credential, SourceError> {
        let now = self.clock.now();
        let cached = self.current.read().unwrap().clone();
        let rejected = self.rejected.load(Ordering::Acquire);
        if let Some(e) = &cached {
            let usable = e.usable_until.is_none_or(|u| now < u);
            let due = rejected || e.refresh_at.is_some_and(|r| now >= r) || self.source.changed();
            if usable && !due {
                return Ok(e.credential.clone());
            }
            // Refused by the store: wait for a fresh one below, never hand it out again
            // while a refresh is under way.
            if usable && !rejected {
                // Due, still valid: refresh unless someone else already is.
                let Ok(state) = self.refresh.try_lock() else {
                    return Ok(e.credential.clone());
                };
                return Ok(self
                    .refresh_locked(state, now)
                    .await
                    .unwrap_or_else(|_| e.credential.clone()));
            }
        }
        // Nothing usable: wait for the refresh in flight, or run one.
        let state = self.refresh.lock().await;
        let now = self.clock.now();
        if let Some(e) = self.current.read().unwrap().clone()
            && e.usable_until.is_none_or(|u| now < u)
            && !self.rejected.load(Ordering::Acquire)
            && e.refresh_at.is_none_or(|r| now < r)
        {
            return Ok(e.credential.clone());
        }
        self.refresh_locked(state, now).await
    }

    async fn refresh_locked(
        &self,
        mut state: tokio::sync::MutexGuard<'_, RefreshState>,
        now: Timestamp,
    ) -> Result<Credential, SourceError> {
        if let Some(nb) = state.not_before
            && now < nb
        {
            let err = state
                .last_error
                .clone()
                .unwrap_or_else(|| SourceError::new(self.source.name(), "backing off"));
            return self.fallback(err, now);
        }
        match self.source.fetch().await {
            Ok(credential) => {
                let now = self.clock.now();
                let entry = Arc::new(self.entry(credential.clone(), now));
                *self.current.write().unwrap() = Some(entry);
                self.rejected.store(false, Ordering::Release);
                state.not_before = None;
                state.backoff = Duration::ZERO;
                state.last_error = None;
                self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    source = self.source.name(),
                    expires_in = ?credential.expires_at.map(|e| now.until(e)),
                    "credential refreshed"
                );
                Ok(credential)
            }
            Err(err) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                state.backoff = if state.backoff.is_zero() {
                    self.policy.min_backoff
                } else {
                    (state.backoff * 2).min(self.policy.max_backoff)
                };
                state.not_before = Some(now.saturating_add(state.backoff));
                state.last_error = Some(err.clone());
                tracing::warn!(source = self.source.name(), error = %err, retry_in = ?state.backoff, "credential refresh failed");
                self.fallback(err, now)
            }
        }
    }

    /// The cached credential while it is usable, else the error.
    fn fallback(&self, err: SourceError, now: Timestamp) -> Result<Credential, SourceError> {
        match self.current.read().unwrap().as_ref() {
            Some(e) if e.usable_until.is_none_or(|u| now < u) => Ok(e.credential.clone()),
            _ => Err(err),
        }
    }

    /// The upstream refused a request signed with `key_id` (expired, unknown key, bad
    /// token). When that is the credential held now, the next [`get`](Self::get)
    /// fetches a new one; returns whether this forced a refresh (a key replaced
    /// meanwhile, or a refresh already forced, does not force another). The caller
    /// retries its request at most once.
    pub fn reject(&self, key_id: &str) -> bool {
        // Holding the read lock: a refresh cannot replace the credential between the
        // check and the flag, so the flag always lands on the key that was refused.
        let current = self.current.read().unwrap();
        let held = current
            .as_ref()
            .is_some_and(|e| e.credential.access_key_id == key_id);
        if !held || self.rejected.swap(true, Ordering::AcqRel) {
            return false;
        }
        drop(current);
        self.stats.forced.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests;
