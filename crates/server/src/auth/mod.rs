//! Who may do what. A request's caller is an OIDC token's verified claims, a static
//! token, or nobody (anonymous); what it may do is the union of the grants it holds,
//! and nothing else. With no `[auth]` configured every caller may do everything (the
//! server then listens on loopback only, or behind `--insecure-no-auth`).

use std::sync::Arc;

use artifactstore_model::Clock;
use artifactstore_oidc::{IssuerConfig, TokenConfig as VerifierConfig, TokenVerifier};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

mod grants;
mod tokens;

pub use grants::{Grant, GrantConfig, GrantError, Permission, RuleConfig};
pub use tokens::{TOKEN_PREFIX, TokenConfig, new_token, token_hash};

use grants::{GrantTemplate, Rule};
use tokens::StaticTokens;

/// `[auth]` in `serve`'s configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Trusted OIDC issuers (as in vend's `[[issuers]]`).
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Token checks shared by every issuer (leeway, size, algorithms, required claims);
    /// an issuer may override the leeway and required claims.
    #[serde(default)]
    pub token: VerifierConfig,
    /// Claim rules: a token gets the grant of every rule that matches it.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Static bearer tokens, held as SHA-256 hashes.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// What a request without a token may do: read only, and only where listed.
    #[serde(default)]
    pub anonymous: Vec<GrantConfig>,
    /// Require the `admin` permission for `/metrics`.
    #[serde(default)]
    pub protect_metrics: bool,
}

/// Who is calling, as an audit line or a log names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// No `[auth]`: the server is open.
    Open,
    Anonymous,
    /// A static token, by its configured name.
    Token(String),
    Oidc {
        issuer: String,
        subject: String,
    },
}

#[derive(Clone, Debug)]
enum Access {
    All,
    /// Shared, so a request's caller costs no copy of its grants.
    Grants(Arc<[Grant]>),
}

/// The caller of one request: who, and what it may do.
#[derive(Clone, Debug)]
pub struct Caller {
    pub who: Who,
    access: Access,
    /// Set once a permission check has passed, shared by every copy of this caller: the
    /// audit writes a change as allowed only then (see [`Granted`]).
    granted: Arc<std::sync::atomic::AtomicBool>,
}

/// Left on an answer whose request passed a permission check.
#[derive(Clone, Copy, Debug)]
pub struct Granted;

impl Caller {
    /// A caller of a server without `[auth]`.
    pub fn open() -> Caller {
        Caller {
            who: Who::Open,
            access: Access::All,
            granted: Default::default(),
        }
    }

    fn grants(&self) -> &[Grant] {
        match &self.access {
            Access::All => &[],
            Access::Grants(g) => g,
        }
    }

    pub fn allows(&self, permission: Permission, namespace: &str, name: &str) -> bool {
        matches!(self.access, Access::All)
            || self
                .grants()
                .iter()
                .any(|g| g.allows(permission, namespace, name))
    }

    /// Whether some name of `namespace` is readable: then the namespace is listed.
    pub fn reads_in(&self, namespace: &str) -> bool {
        matches!(self.access, Access::All)
            || self
                .grants()
                .iter()
                .any(|g| g.allows_in(Permission::Read, namespace))
    }

    /// Whether the caller reads everything, so listings need no filtering.
    pub fn reads_everything(&self) -> bool {
        matches!(self.access, Access::All)
            || self
                .grants()
                .iter()
                .any(|g| g.is_universal(Permission::Read))
    }

    /// `Cache-Control` of an answer that never changes: shared caches may keep it only
    /// when anyone could have read it without a token.
    pub fn immutable_cache_control(&self) -> &'static str {
        match self.who {
            Who::Open | Who::Anonymous => "public, max-age=31536000, immutable",
            _ => "private, max-age=31536000, immutable",
        }
    }

    /// What every namespace the caller may read in starts with ("" when anything), so
    /// a filtered listing reads only the rows that can pass.
    pub fn readable_namespace_prefix(&self) -> String {
        common_prefix(
            self.grants()
                .iter()
                .filter(|g| g.permissions.contains(&Permission::Read))
                .flat_map(|g| g.namespaces.iter()),
        )
    }

    /// What every readable name of `namespace` starts with.
    pub fn readable_name_prefix(&self, namespace: &str) -> String {
        common_prefix(
            self.grants()
                .iter()
                .filter(|g| g.allows_in(Permission::Read, namespace))
                .flat_map(|g| g.names.iter()),
        )
    }

    fn refuse(&self, permission: Permission, resource: &str) -> ApiError {
        match self.who {
            // Someone without a token may get further with one: 401, not 403.
            Who::Anonymous => ApiError::unauthenticated(
                "request_invalid",
                format!(
                    "`{permission}` on {resource} needs a token: send Authorization: Bearer <token>"
                ),
            ),
            _ => ApiError::forbidden(permission.as_str(), resource),
        }
    }

    /// `Ok` when the caller holds `permission` on `namespace/name`, else 401/403.
    pub fn require(&self, permission: Permission, namespace: &str, name: &str) -> ApiResult<()> {
        if self.allows(permission, namespace, name) {
            self.grant();
            Ok(())
        } else {
            Err(self.refuse(permission, &format!("{namespace}/{name}")))
        }
    }

    /// `Ok` when some name of `namespace` is readable (listing its names).
    pub fn require_read_in(&self, namespace: &str) -> ApiResult<()> {
        if self.reads_in(namespace) {
            self.grant();
            Ok(())
        } else {
            Err(self.refuse(Permission::Read, &format!("namespace {namespace}")))
        }
    }

    /// `Ok` when the caller holds `permission` somewhere (the admin API, `/metrics`).
    pub fn require_anywhere(&self, permission: Permission) -> ApiResult<()> {
        if matches!(self.access, Access::All)
            || self
                .grants()
                .iter()
                .any(|g| g.permissions.contains(&permission))
        {
            self.grant();
            Ok(())
        } else {
            Err(self.refuse(permission, "this server"))
        }
    }

    fn grant(&self) {
        self.granted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a permission check of this caller (or a copy of it) has passed.
    pub fn was_granted(&self) -> bool {
        self.granted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The longest prefix of the literal beginnings (before the first `*` or `?`) of
/// `patterns`; "" when there are none.
fn common_prefix<'a>(patterns: impl Iterator<Item = &'a String>) -> String {
    let mut prefix: Option<&str> = None;
    for p in patterns {
        let literal = &p[..p.find(['*', '?']).unwrap_or(p.len())];
        prefix = Some(match prefix {
            None => literal,
            Some(sofar) => {
                let common = sofar
                    .char_indices()
                    .zip(literal.chars())
                    .find(|((_, a), b)| a != b)
                    .map_or(sofar.len().min(literal.len()), |((i, _), _)| i);
                &sofar[..common]
            }
        });
    }
    prefix.unwrap_or("").to_owned()
}

struct Enforced {
    verifier: Option<Arc<TokenVerifier>>,
    rules: Vec<Rule>,
    tokens: StaticTokens,
    anonymous: Arc<[Grant]>,
    protect_metrics: bool,
    clock: Arc<dyn Clock>,
}

/// The server's authentication and grants; [`Auth::off`] without `[auth]`.
pub struct Auth {
    enforced: Option<Enforced>,
}

impl Auth {
    pub fn off() -> Auth {
        Auth { enforced: None }
    }

    /// Checks `[auth]` and builds what enforces it. `http` fetches issuers' keys.
    pub fn new(
        config: &AuthConfig,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Auth, GrantError> {
        artifactstore_oidc::config::check(&config.issuers, &config.token)
            .map_err(|e| GrantError(format!("[auth] {e}")))?;
        if !config.rules.is_empty() && config.issuers.is_empty() {
            return Err(GrantError(
                "[[auth.rules]] match token claims, but no [[auth.issuers]] is configured".into(),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            let what = |m: String| GrantError(format!("[[auth.rules]] #{}: {m}", i + 1));
            rules.push(Rule::parse(r).map_err(|e| what(e.0))?);
            match &r.issuer {
                Some(issuer) if !config.issuers.iter().any(|c| &c.issuer == issuer) => {
                    return Err(what(format!(
                        "issuer {issuer:?} is not one of [[auth.issuers]]"
                    )));
                }
                // With two issuers, a rule written for one issuer's claims could be met
                // by the other's tokens: it must say which it is for.
                None if config.issuers.len() > 1 => {
                    return Err(what(
                        "name its `issuer`: more than one issuer is trusted".into(),
                    ));
                }
                _ => {}
            }
        }
        let mut anonymous = Vec::new();
        for (i, a) in config.anonymous.iter().enumerate() {
            let what = |m: String| GrantError(format!("[auth] anonymous #{}: {m}", i + 1));
            let template = GrantTemplate::parse(&a.namespaces, &a.names, &a.permissions, false)
                .map_err(|e| what(e.0))?;
            if template
                .permissions()
                .iter()
                .any(|p| *p != Permission::Read)
            {
                return Err(what("anonymous callers may only read".into()));
            }
            anonymous.extend(template.fill(&Default::default()));
        }
        let verifier = (!config.issuers.is_empty()).then(|| {
            Arc::new(TokenVerifier::new(
                &config.issuers,
                config.token.clone(),
                http,
                clock.clone(),
            ))
        });
        Ok(Auth {
            enforced: Some(Enforced {
                verifier,
                rules,
                tokens: StaticTokens::parse(&config.tokens)?,
                anonymous: anonymous.into(),
                protect_metrics: config.protect_metrics,
                clock,
            }),
        })
    }

    /// The OIDC verifier, whose keys the server keeps fresh in the background.
    pub fn verifier_handle(&self) -> Option<Arc<TokenVerifier>> {
        self.enforced.as_ref()?.verifier.clone()
    }

    /// Who sent a request with this `Authorization` header, and what it may do.
    pub async fn caller(&self, headers: &axum::http::HeaderMap) -> ApiResult<Caller> {
        let Some(on) = &self.enforced else {
            return Ok(Caller::open());
        };
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let authorization = values.next();
        if values.next().is_some() {
            return Err(ApiError::unauthenticated(
                "request_invalid",
                "more than one Authorization header",
            ));
        }
        let Some(value) = authorization else {
            return Ok(Caller {
                who: Who::Anonymous,
                access: Access::Grants(on.anonymous.clone()),
                granted: Default::default(),
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "request_invalid",
                    "Authorization must be `Bearer <token>`",
                )
            })?;
        if token.starts_with(TOKEN_PREFIX) {
            let found = on.tokens.find(token).ok_or_else(|| {
                ApiError::unauthenticated("token_invalid", "this token is not known here")
            })?;
            if found.expires.is_some_and(|e| e <= on.clock.now()) {
                return Err(ApiError::unauthenticated(
                    "token_expired",
                    format!("static token {:?} has expired", found.name),
                ));
            }
            return Ok(Caller {
                who: Who::Token(found.name.clone()),
                access: Access::Grants(found.grants.clone()),
                granted: Default::default(),
            });
        }
        let Some(verifier) = &on.verifier else {
            return Err(ApiError::unauthenticated(
                "issuer_untrusted",
                "this server trusts no token issuer",
            ));
        };
        let verified = verifier
            .verify(token)
            .await
            .map_err(|r| ApiError::unauthenticated(r.reason.as_str(), r.message))?;
        let grants: Vec<Grant> = on
            .rules
            .iter()
            .filter_map(|r| r.grant_for(&verified.issuer, &verified.claims))
            .collect();
        Ok(Caller {
            who: Who::Oidc {
                issuer: verified.issuer,
                subject: verified.subject,
            },
            access: Access::Grants(grants.into()),
            granted: Default::default(),
        })
    }
}

/// Handlers take the caller [`authenticate`] found. A route reached without one is a
/// wiring mistake: it fails closed.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a route ran without authentication"))
    }
}

/// Finds the caller of every `/v1/` request (and of `/metrics` with
/// `protect_metrics`) before its handler runs, and answers 401 for a refused token.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let metrics =
        path == "/metrics" && st.auth.enforced.as_ref().is_some_and(|e| e.protect_metrics);
    if !path.starts_with("/v1/") && !metrics {
        return next.run(req).await;
    }
    let caller = match st.auth.caller(req.headers()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if metrics && let Err(e) = caller.require_anywhere(Permission::Admin) {
        return for_audit(e.into_response(), &caller);
    }
    req.extensions_mut().insert(caller.clone());
    for_audit(next.run(req).await, &caller)
}

/// The answer, telling the audit who asked and whether a permission check passed.
fn for_audit(mut resp: Response, caller: &Caller) -> Response {
    resp.extensions_mut().insert(caller.who.clone());
    if caller.was_granted() {
        resp.extensions_mut().insert(Granted);
    }
    resp
}

#[cfg(test)]
mod tests;
