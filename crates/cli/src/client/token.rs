//! The bearer token the client commands send: where it comes from (`--token-file`,
//! `--token-env`, `--token-from github-actions`, or `ARTIFACTSTORE_TOKEN`), and the one
//! [`Token`] every request asks, which gets the token again shortly before its `exp`.
//!
//! The token is held only as a [`Secret`]: no error, log line or `Debug` shows it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use artifactstore_model::secret::{Secret, read_trimmed_file};
use reqwest::{Url, header};

use crate::exit::{self, fail};

/// A token whose `exp` is this near (seconds) is got again before the next request, so
/// that it does not expire between being read and being checked by the server.
const REFRESH_BEFORE_SECS: u64 = 60;

/// The variable that holds a token itself. Only a variable, never a flag: a flag's
/// value shows in `ps` to every user of the machine.
pub const TOKEN_VAR: &str = "ARTIFACTSTORE_TOKEN";

const GITHUB_URL_VAR: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
const GITHUB_TOKEN_VAR: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// The options every client command takes to authenticate. At most one source: a
/// token file, a variable named by `--token-env`, a CI runner's ID token, or
/// `ARTIFACTSTORE_TOKEN`.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Authentication (or the token itself in ARTIFACTSTORE_TOKEN)")]
pub struct TokenArgs {
    /// Send the bearer token in FILE (read again when the token in it nears its expiry).
    #[arg(long, value_name = "FILE", env = "ARTIFACTSTORE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Send the bearer token in the environment variable NAME (GitLab `id_tokens`).
    #[arg(long, value_name = "NAME", env = "ARTIFACTSTORE_TOKEN_ENV")]
    pub token_env: Option<String>,
    /// Request an ID token from the CI runner (GitHub Actions needs the job's
    /// `permissions: id-token: write`); requested again as it nears its expiry.
    #[arg(long, value_enum, value_name = "CI", env = "ARTIFACTSTORE_TOKEN_FROM")]
    pub token_from: Option<TokenProvider>,
    /// The audience of the ID token `--token-from` requests: the server's.
    #[arg(
        long,
        value_name = "AUD",
        env = "ARTIFACTSTORE_TOKEN_AUDIENCE",
        default_value = "artifactstore"
    )]
    pub token_audience: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenProvider {
    GithubActions,
}

/// Where the token is got, each time it is needed again.
#[derive(Debug)]
pub enum Source {
    File(PathBuf),
    /// A variable of this process's environment (`--token-env NAME`, `ARTIFACTSTORE_TOKEN`).
    Env(String),
    /// The GitHub Actions runner's ID token endpoint.
    GithubActions {
        request_url: Url,
        request_token: Secret,
        audience: String,
    },
}

impl Source {
    /// The one source `args` and the environment (`env`) name, if any; two are a usage
    /// error naming both.
    pub fn from_args(
        args: &TokenArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Source>> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut given = Vec::new();
        if args
            .token_file
            .as_ref()
            .is_some_and(|p| !p.as_os_str().is_empty())
        {
            given.push("--token-file (ARTIFACTSTORE_TOKEN_FILE)");
        }
        if args.token_env.as_ref().is_some_and(|n| !n.is_empty()) {
            given.push("--token-env (ARTIFACTSTORE_TOKEN_ENV)");
        }
        if args.token_from.is_some() {
            given.push("--token-from (ARTIFACTSTORE_TOKEN_FROM)");
        }
        if env(TOKEN_VAR).is_some() {
            given.push(TOKEN_VAR);
        }
        if given.len() > 1 {
            return Err(fail(
                exit::USAGE,
                format!(
                    "more than one token source given: {}; give one",
                    given.join(" and ")
                ),
            ));
        }
        if let Some(path) = args
            .token_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            return Ok(Some(Source::File(path.clone())));
        }
        if let Some(name) = args.token_env.as_ref().filter(|n| !n.is_empty()) {
            return Ok(Some(Source::Env(name.clone())));
        }
        if args.token_from == Some(TokenProvider::GithubActions) {
            let missing = |var: &str| {
                fail(
                    exit::USAGE,
                    format!(
                        "--token-from github-actions: {var} is not set (the job needs \
                         `permissions: id-token: write`)"
                    ),
                )
            };
            let url = env(GITHUB_URL_VAR).ok_or_else(|| missing(GITHUB_URL_VAR))?;
            let request_url = Url::parse(url.trim()).map_err(|e| {
                fail(
                    exit::USAGE,
                    format!("--token-from github-actions: {GITHUB_URL_VAR}: {e}"),
                )
            })?;
            let request_token = env(GITHUB_TOKEN_VAR).ok_or_else(|| missing(GITHUB_TOKEN_VAR))?;
            return Ok(Some(Source::GithubActions {
                request_url,
                request_token: Secret::new(request_token.trim()),
                audience: args.token_audience.clone(),
            }));
        }
        Ok(env(TOKEN_VAR)
            .is_some()
            .then(|| Source::Env(TOKEN_VAR.to_owned())))
    }

    /// Reads a file or variable source; `None` for a source that must be asked over HTTP.
    fn read_local(&self) -> Option<anyhow::Result<Secret>> {
        match self {
            // The error names the path, never the content.
            Source::File(path) => Some(
                read_trimmed_file(path)
                    .map(Secret::new)
                    .map_err(|e| fail(exit::USAGE, format!("--token-file: {e}"))),
            ),
            Source::Env(name) => Some(match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
                _ => Err(fail(
                    exit::USAGE,
                    format!("token variable {name} is not set or empty"),
                )),
            }),
            Source::GithubActions { .. } => None,
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> anyhow::Result<Secret> {
        if let Some(local) = self.read_local() {
            return local;
        }
        let Source::GithubActions {
            request_url,
            request_token,
            audience,
        } = self
        else {
            unreachable!("read_local answers every other source");
        };
        request_github(http, request_url, request_token, audience).await
    }
}

/// Asks the runner for an ID token with `audience`. No failure repeats what the runner
/// answered: its body may hold a token.
async fn request_github(
    http: &reqwest::Client,
    request_url: &Url,
    request_token: &Secret,
    audience: &str,
) -> anyhow::Result<Secret> {
    let refused = |why: String| {
        fail(
            exit::UNAUTHENTICATED,
            format!("--token-from github-actions: no ID token from the runner: {why}"),
        )
    };
    let mut url = request_url.clone();
    url.query_pairs_mut().append_pair("audience", audience);
    let resp = http
        .get(url)
        .bearer_auth(request_token.expose())
        .header(header::ACCEPT, "application/json")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| refused(format!("cannot reach {GITHUB_URL_VAR}: {e}")))?;
    if !resp.status().is_success() {
        return Err(refused(format!("HTTP {}", resp.status().as_u16())));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| refused(format!("reading the answer: {e}")))?;
    let value = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|doc| doc.get("value")?.as_str().map(str::to_owned))
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| refused("the answer is not JSON with a string `value`".to_owned()))?;
    Ok(Secret::new(value.trim()))
}

/// The `exp` claim of a JWT, read without checking the signature: only to know when to
/// get a fresh one; the server does the checking. `None` for a token that is not a JWT
/// with a numeric `exp` (a static token), which never expires on this side.
pub fn jwt_exp(token: &str) -> Option<u64> {
    // A JWS has exactly three parts.
    if token.split('.').count() != 3 {
        return None;
    }
    let exp = artifactstore_oidc::verify::unverified_claims(token)?.remove("exp")?;
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug)]
struct Held {
    secret: Secret,
    exp: Option<u64>,
}

/// The token of one run: got once, and again before each request once its `exp` is
/// within [`REFRESH_BEFORE_SECS`]. The lock is held while a token is got, so requests in
/// parallel wait for one read or one request to the runner instead of each making one.
#[derive(Debug)]
pub struct Token {
    source: Source,
    http: reqwest::Client,
    held: tokio::sync::Mutex<Option<Held>>,
}

impl Token {
    /// A file or variable is read now, so a missing one fails before any work is done.
    pub fn new(source: Source, http: reqwest::Client) -> anyhow::Result<Token> {
        let held = source.read_local().transpose()?.map(Held::of);
        Ok(Token {
            source,
            http,
            held: tokio::sync::Mutex::new(held),
        })
    }

    /// The token to send now.
    pub async fn current(&self) -> anyhow::Result<Secret> {
        self.current_at(now_secs()).await
    }

    async fn current_at(&self, now: u64) -> anyhow::Result<Secret> {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref()
            && h.exp
                .is_none_or(|exp| exp > now.saturating_add(REFRESH_BEFORE_SECS))
        {
            return Ok(h.secret.clone());
        }
        let fresh = Held::of(self.source.fetch(&self.http).await?);
        let secret = fresh.secret.clone();
        *held = Some(fresh);
        Ok(secret)
    }

    /// The server said `sent` expired (its clock is ahead of its `exp`, or of ours):
    /// get the token again, whatever its `exp` says, unless a request in parallel
    /// already replaced `sent`.
    pub async fn refetch(&self, sent: &Secret) -> anyhow::Result<()> {
        let mut held = self.held.lock().await;
        if held.as_ref().is_some_and(|h| &h.secret != sent) {
            return Ok(());
        }
        *held = Some(Held::of(self.source.fetch(&self.http).await?));
        Ok(())
    }
}

impl Held {
    fn of(secret: Secret) -> Held {
        let exp = jwt_exp(secret.expose());
        Held { secret, exp }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    fn args() -> TokenArgs {
        TokenArgs {
            token_file: None,
            token_env: None,
            token_from: None,
            token_audience: "artifactstore".into(),
        }
    }

    fn exit_code(e: &anyhow::Error) -> u8 {
        e.downcast_ref::<exit::Failure>().map_or(0, |f| f.code)
    }

    #[test]
    fn exp_is_read_from_a_jwt_and_a_static_token_never_expires() {
        assert_eq!(
            jwt_exp(&jwt(r#"{"sub":"x","exp":1800000000}"#)),
            Some(1_800_000_000)
        );
        assert_eq!(
            jwt_exp(&jwt(r#"{"exp":1800000000.5}"#)),
            Some(1_800_000_000)
        );
        // Padded base64 is tolerated.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":7}"#)
        );
        assert_eq!(jwt_exp(&padded), Some(7));
        assert_eq!(jwt_exp(&jwt(r#"{"sub":"no exp"}"#)), None);
        assert_eq!(jwt_exp(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(jwt_exp(&jwt(r#"{"exp":-5}"#)), None);
        assert_eq!(jwt_exp("as_static_0123456789abcdef"), None);
        assert_eq!(jwt_exp("a.b"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
        assert_eq!(jwt_exp(&format!("{}.extra", jwt(r#"{"exp":7}"#))), None);
    }

    #[tokio::test]
    async fn a_file_token_is_read_again_only_as_it_nears_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let now = 1_800_000_000u64;
        let first = jwt(&format!(r#"{{"exp":{}}}"#, now + 600));
        std::fs::write(&path, format!("{first}\n")).unwrap();
        let token = Token::new(Source::File(path.clone()), reqwest::Client::new()).unwrap();
        assert_eq!(token.current_at(now).await.unwrap().expose(), first);

        // Far from its exp: the file is not read again, even though it changed.
        let second = jwt(&format!(r#"{{"exp":{}}}"#, now + 3600));
        std::fs::write(&path, &second).unwrap();
        assert_eq!(token.current_at(now).await.unwrap().expose(), first);
        // Within 60 s of it: read again.
        assert_eq!(token.current_at(now + 541).await.unwrap().expose(), second);
        // The new one is held until it nears its own exp.
        std::fs::write(&path, "static-token").unwrap();
        assert_eq!(token.current_at(now + 541).await.unwrap().expose(), second);
        assert_eq!(
            token.current_at(now + 3599).await.unwrap().expose(),
            "static-token"
        );
        // A static token is never read again on time alone...
        std::fs::write(&path, "other").unwrap();
        assert_eq!(
            token.current_at(u64::MAX).await.unwrap().expose(),
            "static-token"
        );
        // ...only when the server says it expired, and not when a request in parallel
        // already replaced the one refused.
        token.refetch(&Secret::new("older")).await.unwrap();
        assert_eq!(
            token.current_at(now).await.unwrap().expose(),
            "static-token"
        );
        token.refetch(&Secret::new("static-token")).await.unwrap();
        assert_eq!(token.current_at(now).await.unwrap().expose(), "other");

        // A file that went away fails naming its path, never a token.
        std::fs::remove_file(&path).unwrap();
        let e = token.refetch(&Secret::new("other")).await.unwrap_err();
        assert_eq!(exit_code(&e), exit::USAGE);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(Token::new(Source::File(path), reqwest::Client::new()).is_err());
    }

    #[test]
    fn two_sources_are_a_usage_error_naming_both() {
        let none = |_: &str| None;
        assert!(Source::from_args(&args(), none).unwrap().is_none());

        let mut a = args();
        a.token_file = Some("/t".into());
        a.token_env = Some("CI_JOB_JWT".into());
        let e = Source::from_args(&a, none).unwrap_err();
        assert_eq!(exit_code(&e), exit::USAGE);
        assert!(e.to_string().contains("--token-file"), "{e}");
        assert!(e.to_string().contains("--token-env"), "{e}");

        let static_token = |k: &str| (k == TOKEN_VAR).then(|| "canary-static-81f2".to_owned());
        let mut a = args();
        a.token_from = Some(TokenProvider::GithubActions);
        let e = Source::from_args(&a, static_token).unwrap_err();
        assert!(e.to_string().contains(TOKEN_VAR), "{e}");
        assert!(!e.to_string().contains("canary"), "{e}");

        // One source alone is fine; an empty variable is no source.
        assert!(matches!(
            Source::from_args(&args(), static_token).unwrap(),
            Some(Source::Env(n)) if n == TOKEN_VAR
        ));
        let empty = |k: &str| (k == TOKEN_VAR).then(String::new);
        let mut a = args();
        a.token_env = Some("GITLAB_TOKEN".into());
        assert!(matches!(
            Source::from_args(&a, empty).unwrap(),
            Some(Source::Env(n)) if n == "GITLAB_TOKEN"
        ));

        // GitHub Actions without the runner's variables says which one is missing.
        let mut a = args();
        a.token_from = Some(TokenProvider::GithubActions);
        let e = Source::from_args(&a, none).unwrap_err();
        assert_eq!(exit_code(&e), exit::USAGE);
        assert!(e.to_string().contains(GITHUB_URL_VAR), "{e}");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let runner = |k: &str| match k {
            GITHUB_URL_VAR => Some("https://runner.example/idtoken?api-version=2.0".to_owned()),
            GITHUB_TOKEN_VAR => Some("canary-request-5d1e".to_owned()),
            _ => None,
        };
        let mut a = args();
        a.token_from = Some(TokenProvider::GithubActions);
        let source = Source::from_args(&a, runner).unwrap().unwrap();
        let shown = format!("{source:?}");
        assert!(shown.contains("runner.example"), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "canary-file-9b3c").unwrap();
        let token = Token::new(Source::File(path), reqwest::Client::new()).unwrap();
        let shown = format!("{token:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
    }
}
