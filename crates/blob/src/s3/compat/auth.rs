//! How the store checks credentials: session tokens, error codes, clock skew; and
//! MinIO's health endpoints.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_smithy_async::time::TimeSource;

use super::sts::Temporary;
use super::{
    Outcome, Probe, answer, credentials, fail, pass, skipped, status_and_code, unsupported,
};

/// A cheap signed request with an error body: ListObjectsV2 of at most one key (without
/// a prefix: moto in auth mode miscomputes signatures of prefixed listings).
async fn list_with(p: &Probe, creds: Credentials, clock: Option<SkewedClock>) -> Listed {
    let client = match p.client_with(creds, |b| match clock {
        Some(c) => b.time_source(c),
        None => b,
    }) {
        Ok(c) => c,
        Err(e) => return Listed::Failed(e.to_string()),
    };
    match client
        .list_objects_v2()
        .bucket(&p.bucket)
        .max_keys(1)
        .send()
        .await
    {
        Ok(_) => Listed::Served,
        Err(e)
            if status_and_code(&e)
                .0
                .is_some_and(|s| (400..500).contains(&s)) =>
        {
            Listed::Refused(answer(&e))
        }
        Err(e) => Listed::Failed(answer(&e)),
    }
}

/// A request served, refused (4xx: the store said no), or neither (no answer, 5xx).
enum Listed {
    Served,
    Refused(String),
    Failed(String),
}

pub(super) async fn session_token_enforced(p: &Probe, temporary: &Temporary) -> Outcome {
    let Some(creds) = temporary.credentials() else {
        return skipped(temporary.why_none());
    };
    let Some(token) = creds.session_token() else {
        return skipped("the temporary credentials came without a session token");
    };
    let (key, secret) = (creds.access_key_id(), creds.secret_access_key());
    match list_with(p, credentials(key, secret, Some(token)), None).await {
        Listed::Served => {}
        Listed::Refused(e) | Listed::Failed(e) => {
            return fail(format!("refused even with the session token: {e}"));
        }
    }
    match list_with(p, credentials(key, secret, None), None).await {
        Listed::Refused(e) => pass(format!("with the token served; without it: {e}")),
        Listed::Served => fail("served without the session token"),
        Listed::Failed(e) => fail(format!("without the token: {e}")),
    }
}

pub(super) async fn bogus_session_token(p: &Probe) -> Outcome {
    let c = &p.credential;
    if c.session_token.is_some() {
        return skipped("the configured credentials are temporary (see session-token-enforced)");
    }
    let creds = credentials(
        &c.access_key_id,
        c.secret_access_key.expose(),
        Some("artifactstore-compat-made-up-session-token"),
    );
    match list_with(p, creds, None).await {
        Listed::Refused(e) => pass(format!("refused: {e}")),
        Listed::Served => unsupported("served: the session token is ignored"),
        Listed::Failed(e) => fail(e),
    }
}

pub(super) async fn error_codes(p: &Probe) -> Outcome {
    let c = &p.credential;
    let token = c.session_token.as_ref().map(|t| t.expose());
    let wrong_secret = format!("{}x", c.secret_access_key.expose());
    let unknown_key = format!("AKIACOMPAT{}", super::random_hex(5).to_ascii_uppercase());
    let mut answers = Vec::new();
    for (what, key, secret) in [
        (
            "a wrong secret",
            c.access_key_id.as_str(),
            wrong_secret.as_str(),
        ),
        (
            "an unknown key",
            unknown_key.as_str(),
            c.secret_access_key.expose(),
        ),
    ] {
        match list_with(p, credentials(key, secret, token), None).await {
            Listed::Served => return fail(format!("{what} was accepted")),
            Listed::Refused(answer) => answers.push(format!("{what}: {answer}")),
            Listed::Failed(e) => return fail(format!("{what}: {e}")),
        }
    }
    // Each answer is `HTTP <status> <code>`: equal texts mean one code for both.
    let distinct =
        answers[0].split_once(": ").map(|a| a.1) != answers[1].split_once(": ").map(|a| a.1);
    let evidence = answers.join("; ");
    if distinct {
        pass(evidence)
    } else {
        unsupported(evidence)
    }
}

/// The system clock moved by a fixed amount.
#[derive(Clone, Copy, Debug)]
struct SkewedClock {
    behind: Duration,
}

impl TimeSource for SkewedClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() - self.behind
    }
}

pub(super) async fn clock_skew(p: &Probe) -> Outcome {
    let clock = SkewedClock {
        behind: Duration::from_secs(20 * 60),
    };
    match list_with(p, p.sdk_credentials(), Some(clock)).await {
        Listed::Refused(e) => pass(format!("refused: {e}")),
        Listed::Served => {
            unsupported("served: a request signed 20 minutes ago can be replayed for longer")
        }
        Listed::Failed(e) => fail(e),
    }
}

pub(super) async fn minio_health(p: &Probe) -> Outcome {
    let Some(endpoint) = p.cfg.endpoint_url.as_deref() else {
        return skipped("AWS S3 has no MinIO health endpoints");
    };
    let mut answers = Vec::new();
    for path in ["live", "ready", "cluster"] {
        let url = format!("{}/minio/health/{path}", endpoint.trim_end_matches('/'));
        match p.http.get(&url).send().await {
            Ok(r) => answers.push((path, Some(r.status().as_u16()))),
            Err(_) => answers.push((path, None)),
        }
    }
    let evidence = answers
        .iter()
        .map(|(path, s)| match s {
            Some(s) => format!("{path} {s}"),
            None => format!("{path}: no answer"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ok = answers.iter().filter(|(_, s)| *s == Some(200)).count();
    match ok {
        3 => pass(evidence),
        0 => unsupported(evidence),
        _ => fail(evidence),
    }
}
