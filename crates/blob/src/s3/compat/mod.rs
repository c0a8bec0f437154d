//! `storage compat`: what one S3 endpoint can do, probed feature by feature with the
//! configured credentials, each answer kept as evidence (HTTP status and error code).
//!
//! Every probe writes under one scratch prefix (`<prefix>compat-<random>/`), and
//! everything under it — objects and multipart uploads — is removed at the end, also
//! when a probe failed. Probes send each request once (no retries), so the evidence is
//! the store's own first answer.

mod auth;
mod catalog;
mod conditional;
mod multipart;
mod objects;
mod presign;
mod report;
mod sts;

use std::future::Future;
use std::time::Instant;

use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::SharedCredentialsProvider;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_smithy_types::retry::RetryConfig;
use bytes::Bytes;

use artifactstore_credentials::Credential;

pub use catalog::{FEATURES, Feature};
pub use report::{Cleanup, Report, Row, Status};

use super::S3Config;
use super::config::{normalized_prefix, sdk_config};
use super::credential_retry::sdk_credentials;
use crate::{Error, Result};

/// What the probes may use beyond the store's own configuration.
#[derive(Clone, Debug, Default)]
pub struct CompatOptions {
    /// The STS endpoint to probe (AssumeRole, AssumeRoleWithWebIdentity,
    /// GetCallerIdentity); the STS rows are skipped without one.
    pub sts_endpoint: Option<String>,
    /// A role the configured credentials may assume: its temporary credentials prove
    /// whether the store enforces session tokens.
    pub role_arn: Option<String>,
    /// The store's virtual-host domain, for an endpoint given as an IP address:
    /// `<bucket>.<domain>` is resolved to the endpoint's address.
    pub virtual_host_domain: Option<String>,
}

/// A probe's answer: its status and the evidence for it.
pub(crate) type Outcome = (Status, String);

pub(crate) fn pass(evidence: impl Into<String>) -> Outcome {
    (Status::Pass, evidence.into())
}
pub(crate) fn fail(evidence: impl Into<String>) -> Outcome {
    (Status::Fail, evidence.into())
}
pub(crate) fn unsupported(evidence: impl Into<String>) -> Outcome {
    (Status::Unsupported, evidence.into())
}
pub(crate) fn skipped(evidence: impl Into<String>) -> Outcome {
    (Status::Skipped, evidence.into())
}

/// The store's answer to a failed request, as evidence: `HTTP 412 PreconditionFailed`,
/// or why there was no answer. Messages are left out: they differ from run to run
/// (request ids, keys) and may echo what was sent.
pub(crate) fn answer<E>(e: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            match se.err().code() {
                Some(code) if !code.is_empty() => format!("HTTP {status} {code}"),
                _ => format!("HTTP {status} (no error code)"),
            }
        }
        SdkError::ResponseError(r) => {
            format!("HTTP {} (unparsable answer)", r.raw().status().as_u16())
        }
        other => format!("no answer: {}", super::error::source_chain(other)),
    }
}

/// The HTTP status and error code of a failed request, when the store answered.
pub(crate) fn status_and_code<E>(e: &SdkError<E>) -> (Option<u16>, String)
where
    E: ProvideErrorMetadata,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = match e {
        SdkError::ServiceError(se) => se.err().code().unwrap_or("").to_owned(),
        _ => String::new(),
    };
    (status, code)
}

/// What every probe shares: the store, the credential, the scratch prefix.
pub(crate) struct Probe {
    cfg: S3Config,
    options: CompatOptions,
    credential: Credential,
    /// Signs with the configured credential, addressing as configured.
    client: Client,
    bucket: String,
    /// `<prefix>compat-<random>/`.
    scratch: String,
    http: reqwest::Client,
    /// Every key a probe named: removed at the end even where listing fails.
    named: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Probe {
    /// A prefix under the scratch prefix: not a key, so not deleted by name.
    pub(crate) fn prefix(&self, name: &str) -> String {
        format!("{}{name}", self.scratch)
    }

    pub(crate) fn key(&self, name: &str) -> String {
        let key = format!("{}{name}", self.scratch);
        self.named.lock().unwrap().insert(key.clone());
        key
    }

    /// The SDK credentials of the configured credential.
    fn sdk_credentials(&self) -> Credentials {
        sdk_credentials(&self.credential, SOURCE)
    }

    /// A client on other credentials or settings, sending each request once.
    pub(crate) fn client_with(
        &self,
        creds: Credentials,
        tweak: impl FnOnce(aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder,
    ) -> Result<Client> {
        client_for(&self.cfg, creds, tweak)
    }

    pub(crate) async fn put(&self, key: &str, body: Bytes) -> std::result::Result<(), String> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(SdkBody::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("PutObject failed: {}", answer(&e)))
    }

    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<&str>,
    ) -> std::result::Result<Bytes, SdkError<aws_sdk_s3::operation::get_object::GetObjectError>>
    {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(str::to_owned))
            .send()
            .await?;
        match out.body.collect().await {
            Ok(b) => Ok(b.into_bytes()),
            Err(e) => Err(SdkError::construction_failure(e)),
        }
    }
}

/// Where the probes' credentials say they come from.
const SOURCE: &str = "artifactstore-compat";

/// Made-up or altered credentials for a probe (the configured ones go through
/// [`Probe::sdk_credentials`]).
pub(crate) fn credentials(key_id: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials::new(key_id, secret, token.map(str::to_owned), None, SOURCE)
}

/// A client of `cfg`'s store on `creds`, sending each request once.
fn client_for(
    cfg: &S3Config,
    creds: Credentials,
    tweak: impl FnOnce(aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder,
) -> Result<Client> {
    let builder = sdk_config(cfg)?
        .retry_config(RetryConfig::disabled())
        .credentials_provider(SharedCredentialsProvider::new(creds));
    Ok(Client::from_conf(tweak(builder).build()))
}

/// The rows, each timed, in the catalog's order.
#[derive(Default)]
struct Rows(std::sync::Mutex<Vec<Row>>);

impl Rows {
    async fn add(&self, id: &'static str, probe: impl Future<Output = Outcome>) {
        let start = Instant::now();
        let outcome = probe.await;
        self.push(id, outcome, start);
    }

    fn push(&self, id: &'static str, (status, evidence): Outcome, start: Instant) {
        let f = catalog::feature(id);
        self.0.lock().unwrap().push(Row {
            id,
            group: f.group,
            feature: f.feature,
            status,
            evidence,
            millis: start.elapsed().as_millis() as u64,
        });
    }
}

/// Probes the endpoint `cfg` names with `credential`. Fails only when the bucket cannot
/// be used at all; every feature's answer, refusals included, is a row of the report.
/// When `stop` completes first (a signal), probing ends there and what was written is
/// removed all the same; the report then says it was interrupted.
pub async fn run(
    cfg: &S3Config,
    credential: Credential,
    options: CompatOptions,
    stop: impl Future<Output = ()>,
) -> Result<Report> {
    let mut cfg = cfg.clone();
    cfg.prefix = normalized_prefix(&cfg.prefix);
    let scratch = format!("{}compat-{}/", cfg.prefix, random_hex(8));
    let mut http = artifactstore_credentials::sources::http_client_builder(cfg.connect_timeout)
        .timeout(cfg.operation_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &cfg.ca_bundle {
        let pem = std::fs::read(ca).map_err(|source| Error::Io {
            op: "read CA bundle",
            path: ca.clone(),
            source,
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Config(format!("CA bundle {}: {e}", ca.display())))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
    let client = client_for(&cfg, sdk_credentials(&credential, SOURCE), |b| b)?;
    let endpoint = cfg.endpoint_name();
    let probe = Probe {
        client,
        bucket: cfg.bucket.clone(),
        scratch,
        http,
        named: Default::default(),
        options,
        credential,
        cfg,
    };
    // Nothing else can be probed without the bucket: that is an error, not a row.
    if let Err(e) = probe
        .client
        .head_bucket()
        .bucket(&probe.bucket)
        .send()
        .await
    {
        return Err(Error::Backend {
            kind: super::error::classify(&e).0,
            op: "HeadBucket",
            target: format!("s3://{} at {endpoint}", probe.bucket),
            detail: answer(&e),
        });
    }

    let rows = Rows::default();
    let interrupted = tokio::select! {
        () = probe_all(&probe, &rows) => false,
        () = stop => true,
    };

    let cleanup = probe.sweep().await;
    Ok(Report {
        endpoint,
        bucket: probe.bucket.clone(),
        scratch_prefix: probe.scratch.clone(),
        rows: rows.0.into_inner().unwrap(),
        interrupted,
        cleanup,
    })
}

/// Every probe, in the catalog's order.
async fn probe_all(p: &Probe, rows: &Rows) {
    rows.add("path-style", objects::path_style(p)).await;
    rows.add("virtual-host", objects::virtual_host(p)).await;
    rows.add("list-v2-pagination", objects::list_pagination(p))
        .await;
    rows.add("list-v2-delimiter", objects::list_delimiter(p))
        .await;
    let ranges = objects::Ranges::new(p).await;
    rows.add("range-first-byte", ranges.first_byte(p)).await;
    rows.add("range-last-byte", ranges.last_byte(p)).await;
    rows.add("range-suffix", ranges.suffix(p)).await;
    rows.add("range-unsatisfiable", ranges.unsatisfiable(p))
        .await;
    let start = Instant::now();
    let (upload, etag) = multipart::upload(p).await;
    rows.push("multipart-upload", upload, start);
    rows.push("multipart-completion-etag", etag, start);
    rows.add("multipart-min-part-size", multipart::min_part_size(p))
        .await;
    rows.add("multipart-abort", multipart::abort(p)).await;
    rows.add("multipart-list-uploads", multipart::list_uploads(p))
        .await;
    rows.add("upload-part-copy", multipart::upload_part_copy(p))
        .await;
    rows.add("put-if-none-match", conditional::put_if_none_match(p))
        .await;
    rows.add(
        "complete-if-none-match",
        multipart::complete_if_none_match(p),
    )
    .await;
    rows.add("get-if-match-quoted", conditional::get_if_match(p, true))
        .await;
    rows.add("get-if-match-unquoted", conditional::get_if_match(p, false))
        .await;
    for (id, alg) in conditional::CHECKSUMS {
        rows.add(id, conditional::put_checksum(p, alg.clone()))
            .await;
    }
    rows.add("put-checksum-trailer", conditional::put_checksum_trailer(p))
        .await;
    rows.add("multipart-checksum", multipart::checksums(p))
        .await;
    rows.add("presigned-get", presign::get(p)).await;
    rows.add("presigned-put", presign::put(p)).await;
    rows.add("delete-objects", objects::delete_objects(p)).await;
    rows.add("copy-object", objects::copy_object(p)).await;
    let start = Instant::now();
    let temporary = sts::temporary_credentials(p).await;
    let assume_role = (temporary.assume_role_row(), start);
    rows.add(
        "session-token-enforced",
        auth::session_token_enforced(p, &temporary),
    )
    .await;
    rows.add("bogus-session-token", auth::bogus_session_token(p))
        .await;
    rows.add("error-codes-distinct", auth::error_codes(p)).await;
    rows.add("clock-skew-refused", auth::clock_skew(p)).await;
    rows.add("minio-health", auth::minio_health(p)).await;
    rows.push("sts-assume-role", assume_role.0, assume_role.1);
    rows.add("sts-assume-role-with-web-identity", sts::web_identity(p))
        .await;
    rows.add("sts-get-caller-identity", sts::caller_identity(p))
        .await;
    debug_assert_eq!(rows.0.lock().unwrap().len(), catalog::FEATURES.len());
}

impl Probe {
    /// Removes every object and multipart upload under the scratch prefix: first every
    /// key a probe named, then whatever a listing still finds.
    async fn sweep(&self) -> Cleanup {
        let mut cleanup = Cleanup::default();
        // Unlike the probes, the cleanup retries what fails in passing.
        let attempts = self.cfg.max_attempts.max(3);
        let client = match self.client_with(self.sdk_credentials(), |b| {
            b.retry_config(RetryConfig::standard().with_max_attempts(attempts))
        }) {
            Ok(c) => c,
            Err(e) => {
                cleanup.problems.push(e.to_string());
                return cleanup;
            }
        };
        let named = std::mem::take(&mut *self.named.lock().unwrap());
        for key in named {
            self.delete(&client, &key, &mut cleanup).await;
        }
        // Bounded: the probes write a few dozen keys.
        let mut token = None;
        for _ in 0..100 {
            let page = match client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.scratch)
                .set_continuation_token(token.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    cleanup.unconfirmed = Some(format!("ListObjectsV2: {}", answer(&e)));
                    break;
                }
            };
            for key in page.contents().iter().filter_map(|o| o.key()) {
                self.delete(&client, key, &mut cleanup).await;
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        // Once: a store that cannot list uploads says so with a 4xx or a 501, which a
        // retry would only delay.
        match self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.scratch)
            .send()
            .await
        {
            Ok(list) => {
                for u in list.uploads() {
                    let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                        continue;
                    };
                    let aborted = client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await;
                    match aborted {
                        Ok(_) => cleanup.uploads_aborted += 1,
                        Err(e) => cleanup
                            .problems
                            .push(format!("AbortMultipartUpload {key}: {}", answer(&e))),
                    }
                }
            }
            // Each probe aborts its own uploads; this only catches what one left behind.
            Err(e) if matches!(status_and_code(&e).0, Some(400 | 404 | 405 | 501)) => {}
            Err(e) => {
                let listing = format!("ListMultipartUploads: {}", answer(&e));
                cleanup.unconfirmed = Some(match cleanup.unconfirmed.take() {
                    Some(objects) => format!("{objects}; {listing}"),
                    None => listing,
                });
            }
        }
        cleanup
    }

    /// Deletes `key` if it is there.
    async fn delete(&self, client: &Client, key: &str, cleanup: &mut Cleanup) {
        let head = client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        if head.is_err_and(|e| status_and_code(&e).0 == Some(404)) {
            return; // never written, or gone already
        }
        match client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => cleanup.objects_deleted += 1,
            Err(e) => cleanup
                .problems
                .push(format!("DeleteObject {key}: {}", answer(&e))),
        }
    }
}

/// Random hex for scratch names (not a secret).
fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", artifactstore_model::random_below(256)))
        .collect()
}
