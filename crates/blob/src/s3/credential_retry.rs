//! The SDK's view of the one credential handle, a [`RefreshingCache`]: the provider
//! every request is signed from, and — when the store refuses a request's credential —
//! telling the cache which key it refused and retrying that request once.

use std::fmt;
use std::sync::Arc;

use artifactstore_credentials::{Credential, RefreshingCache};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::future;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut, InterceptorContext,
};
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_s3::config::{
    ConfigBag, Credentials, IdentityCache, Intercept, ProvideCredentials, RuntimeComponents,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::BoxError;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// Wires `cache` into a client's configuration: the provider, no identity cache of the
/// SDK's own (so every request asks the cache), the interceptor and the classifier.
pub(super) fn install(
    builder: aws_sdk_s3::config::Builder,
    cache: Arc<RefreshingCache>,
) -> aws_sdk_s3::config::Builder {
    let rejected = SharedCredentialRejected(Arc::new(CredentialRejected::new(cache.clone())));
    builder
        .credentials_provider(SharedCredentialsProvider::new(CacheProvider(cache)))
        .identity_cache(IdentityCache::no_cache())
        .interceptor(rejected.clone())
        .retry_classifier(rejected)
}

/// The cache as the SDK's credentials provider.
#[derive(Clone)]
struct CacheProvider(Arc<RefreshingCache>);

impl fmt::Debug for CacheProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheProvider({})", self.0.source_name())
    }
}

impl ProvideCredentials for CacheProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let c = self
                .0
                .get()
                .await
                .map_err(CredentialsError::provider_error)?;
            Ok(sdk_credentials(&c, self.0.source_name()))
        })
    }
}

/// The one place a secret leaves its `Secret`: the SDK's signer needs it.
pub(super) fn sdk_credentials(c: &Credential, source: &'static str) -> Credentials {
    Credentials::new(
        &c.access_key_id,
        c.secret_access_key.expose(),
        c.session_token.as_ref().map(|t| t.expose().to_owned()),
        c.expires_at.map(|t| t.to_system_time()),
        source,
    )
}

/// Error codes that mean "this credential", not "this request": a fresh credential
/// may succeed.
const CREDENTIAL_CODES: [&str; 5] = [
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "InvalidToken",
    "TokenRefreshRequired",
];

/// Marks a response that should be retried with a fresh credential.
const RETRY_MARK: &str = "x-artifactstore-retry-with-fresh-credential";

/// What a refusal says about the request's credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// An error code that names the credential (expired, unknown key, bad token).
    Credential,
    /// A 403 without a body (the answer to a HEAD), or a bare `AccessDenied` without a
    /// message (Ceph RGW's answer to an expired session): a refused credential, or a
    /// refused permission (AWS answers a HEAD of a missing key this way without
    /// `s3:ListBucket`) — it cannot say which.
    Ambiguous,
}

/// Whether, and how surely, a response refuses the request's credential.
fn refusal(resp: &HttpResponse) -> Option<Refusal> {
    let status = resp.status().as_u16();
    if !matches!(status, 400 | 403) {
        return None;
    }
    let body = resp
        .body()
        .bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    if body.is_empty() {
        return (status == 403).then_some(Refusal::Ambiguous);
    }
    let element = |name: &str| {
        let open = format!("<{name}>");
        body.find(&open)
            .and_then(|i| body[i + open.len()..].split('<').next())
            .unwrap_or("")
    };
    let code = element("Code");
    if CREDENTIAL_CODES.contains(&code) {
        return Some(Refusal::Credential);
    }
    // Ceph RGW answers an expired or unknown session credential with a bare
    // `AccessDenied` (no message), as it answers a refused permission: like a bodiless
    // 403, worth one fresh credential now and then, not on every request.
    (status == 403 && code == "AccessDenied" && element("Message").trim().is_empty())
        .then_some(Refusal::Ambiguous)
}

#[cfg(test)]
fn refuses_credential(resp: &HttpResponse) -> bool {
    refusal(resp).is_some()
}

/// A bodiless 403 forces a fresh credential at most this often per key: when it is a
/// refused permission, a new credential changes nothing, and every request would mint.
const AMBIGUOUS_REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The key id of a SigV4 `Authorization` header:
/// `… Credential=<key id>/<date>/<region>/s3/aws4_request, …`.
fn signing_key_id(authorization: &str) -> Option<&str> {
    authorization
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
}

/// The key id a request was signed with, kept for the attempt's end.
#[derive(Debug, Clone)]
struct SignedWith(String);

impl Storable for SignedWith {
    type Storer = StoreReplace<Self>;
}

/// Set once a request has been retried for its credential: never twice.
#[derive(Debug, Clone)]
struct RetriedForCredential;

impl Storable for RetriedForCredential {
    type Storer = StoreReplace<Self>;
}

/// Remembers which key signed each attempt; when the store refuses it, tells the cache
/// (which then fetches a new credential, unless that key was already replaced) and marks
/// the response for one retry (per request, whatever the SDK's attempt budget). The
/// classifier only reads the mark, since the SDK runs classifiers more than once per
/// attempt.
struct CredentialRejected {
    cache: Arc<RefreshingCache>,
    /// When a bodiless 403 last forced a refresh, per signing key (the last few keys).
    ambiguous: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
}

impl CredentialRejected {
    fn new(cache: Arc<RefreshingCache>) -> Self {
        CredentialRejected {
            cache,
            ambiguous: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Whether a refusal of `key` is worth a fresh credential now.
    fn worth_refreshing(&self, refusal: Refusal, key: &str, now: std::time::Instant) -> bool {
        if refusal == Refusal::Credential {
            return true;
        }
        let mut seen = self.ambiguous.lock().unwrap();
        if let Some((_, at)) = seen.iter_mut().find(|(k, _)| k == key) {
            if now.duration_since(*at) < AMBIGUOUS_REFRESH_EVERY {
                return false;
            }
            *at = now;
            return true;
        }
        if seen.len() >= 8 {
            seen.remove(0);
        }
        seen.push((key.to_owned(), now));
        true
    }
}

impl fmt::Debug for CredentialRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialRejected")
    }
}

/// One [`CredentialRejected`] serves as interceptor and classifier.
#[derive(Debug, Clone)]
struct SharedCredentialRejected(Arc<CredentialRejected>);

impl Intercept for SharedCredentialRejected {
    fn name(&self) -> &'static str {
        "credential rejected"
    }

    fn read_after_signing(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(key) = context
            .request()
            .headers()
            .get("authorization")
            .and_then(signing_key_id)
        {
            cfg.interceptor_state()
                .store_put(SignedWith(key.to_owned()));
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(resp) = context.response_mut() else {
            return Ok(());
        };
        let Some(refusal) = refusal(resp) else {
            return Ok(());
        };
        if cfg.load::<RetriedForCredential>().is_some() {
            return Ok(());
        }
        let key = cfg
            .load::<SignedWith>()
            .map(|k| k.0.clone())
            .unwrap_or_default();
        if !self
            .0
            .worth_refreshing(refusal, &key, std::time::Instant::now())
        {
            // Answered as what it is: an access denied.
            return Ok(());
        }
        // Retried whatever the answer: if the key was already replaced, the retry is
        // signed with its successor.
        self.0.cache.reject(&key);
        cfg.interceptor_state().store_put(RetriedForCredential);
        resp.headers_mut().insert(RETRY_MARK, "1");
        tracing::info!("the store refused the credential; retrying once with a fresh one");
        Ok(())
    }
}

impl ClassifyRetry for SharedCredentialRejected {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response() {
            Some(resp) if resp.headers().contains_key(RETRY_MARK) => RetryAction::transient_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "credential rejected"
    }
}

#[cfg(test)]
pub(super) mod tests {
    use artifactstore_credentials::RefreshPolicy;
    use artifactstore_credentials::sources::StaticSource;
    use artifactstore_model::secret::Secret;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    /// A cache over fixed keys, as the other modules' tests need one.
    pub(in crate::s3) fn static_cache(ak: &str, sk: &str) -> Arc<RefreshingCache> {
        Arc::new(RefreshingCache::new(
            Arc::new(StaticSource {
                access_key_id: Secret::new(ak),
                secret_access_key: Secret::new(sk),
                session_token: None,
            }),
            RefreshPolicy::default(),
        ))
    }

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body.to_owned()))
    }

    fn error_body(code: &str) -> String {
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
    }

    #[test]
    fn credential_codes_refuse_the_credential() {
        for code in CREDENTIAL_CODES {
            assert!(
                refuses_credential(&response(400, &error_body(code))),
                "{code}"
            );
            assert!(
                refuses_credential(&response(403, &error_body(code))),
                "{code}"
            );
        }
    }

    #[test]
    fn other_refusals_are_about_the_request() {
        for code in ["AccessDenied", "SignatureDoesNotMatch", "NoSuchBucket", ""] {
            assert!(
                !refuses_credential(&response(403, &error_body(code))),
                "{code}"
            );
        }
        // The right code on a status that is not a refusal.
        assert!(!refuses_credential(&response(
            500,
            &error_body("ExpiredToken")
        )));
        assert!(!refuses_credential(&response(404, "")));
    }

    #[test]
    fn a_bodiless_403_forces_a_refresh_at_most_once_a_minute_per_key() {
        let r = CredentialRejected::new(static_cache("AK", "SK"));
        let t0 = std::time::Instant::now();
        let later = |s| t0 + std::time::Duration::from_secs(s);
        assert!(r.worth_refreshing(Refusal::Ambiguous, "AK1", t0));
        assert!(
            !r.worth_refreshing(Refusal::Ambiguous, "AK1", later(5)),
            "within the minute"
        );
        assert!(
            r.worth_refreshing(Refusal::Ambiguous, "AK2", later(5)),
            "another key"
        );
        assert!(
            r.worth_refreshing(Refusal::Credential, "AK1", later(6)),
            "an explicit code always"
        );
        assert!(r.worth_refreshing(Refusal::Ambiguous, "AK1", later(61)));
        // The memory of keys is bounded.
        for i in 0..100 {
            r.worth_refreshing(Refusal::Ambiguous, &format!("K{i}"), later(70));
        }
        assert!(r.ambiguous.lock().unwrap().len() <= 8);
        assert_eq!(refusal(&response(403, "")), Some(Refusal::Ambiguous));
        assert_eq!(
            refusal(&response(403, &error_body("ExpiredToken"))),
            Some(Refusal::Credential)
        );
    }

    #[test]
    fn a_bare_access_denied_is_ambiguous_one_with_a_message_is_about_the_request() {
        let bare = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><BucketName>b</BucketName><RequestId>r</RequestId></Error>";
        assert_eq!(refusal(&response(403, bare)), Some(Refusal::Ambiguous));
        let empty = "<Error><Code>AccessDenied</Code><Message></Message></Error>";
        assert_eq!(refusal(&response(403, empty)), Some(Refusal::Ambiguous));
        assert_eq!(refusal(&response(403, &error_body("AccessDenied"))), None);
        assert_eq!(refusal(&response(400, bare)), None);
    }

    #[test]
    fn a_bodiless_403_refuses_the_credential_a_bodiless_400_does_not() {
        assert!(refuses_credential(&response(403, "")));
        assert!(!refuses_credential(&response(400, "")));
    }

    #[test]
    fn the_key_id_is_read_from_the_authorization_header() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/us-east-1/s3/aws4_request, \
                    SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(signing_key_id(auth), Some("AKIDEXAMPLE"));
        assert_eq!(signing_key_id("Bearer token"), None);
    }

    #[tokio::test]
    async fn the_provider_hands_out_what_the_cache_holds() {
        let provider = CacheProvider(static_cache("AK-1", "canary-sk"));
        let c = provider.provide_credentials().await.unwrap();
        assert_eq!(c.access_key_id(), "AK-1");
        assert_eq!(c.secret_access_key(), "canary-sk");
        assert_eq!(c.expiry(), None);
        assert!(!format!("{provider:?}").contains("canary"));
    }
}
