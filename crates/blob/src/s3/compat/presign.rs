//! Presigned GET and PUT: they work, and a tampered or expired one is refused.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use bytes::Bytes;

use super::{Outcome, Probe, answer, fail, pass};
use crate::conformance::unique_bytes;

fn config(start: SystemTime, expires_in: Duration) -> PresigningConfig {
    PresigningConfig::builder()
        .start_time(start)
        .expires_in(expires_in)
        .build()
        .expect("a valid presigning config")
}

/// The URL with the last character of its signature changed.
fn tampered(url: &str) -> String {
    let Some(at) = url.find("X-Amz-Signature=") else {
        return format!("{url}x");
    };
    let end = url[at..].find('&').map_or(url.len(), |i| at + i);
    let mut out = url.to_owned();
    let last = &url[end - 1..end];
    out.replace_range(end - 1..end, if last == "0" { "1" } else { "0" });
    out
}

async fn send(
    p: &Probe,
    req: &PresignedRequest,
    url: &str,
    body: Option<Bytes>,
) -> Result<(u16, Bytes), String> {
    let method = reqwest::Method::from_bytes(req.method().as_bytes()).map_err(|e| e.to_string())?;
    let mut r = p.http.request(method, url);
    for (name, value) in req.headers() {
        if !name.eq_ignore_ascii_case("host") {
            r = r.header(name, value);
        }
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    // A presigned URL is a credential while it lasts: errors never carry it.
    let resp = r
        .send()
        .await
        .map_err(|e| format!("no answer: {}", e.without_url()))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {}", e.without_url()))?;
    Ok((status, body))
}

pub(super) async fn get(p: &Probe) -> Outcome {
    let key = p.key("presign/get");
    let body = Bytes::from(unique_bytes(1024));
    if let Err(e) = p.put(&key, body.clone()).await {
        return fail(e);
    }
    let presign = |cfg| {
        p.client
            .get_object()
            .bucket(&p.bucket)
            .key(&key)
            .presigned(cfg)
    };
    let now = SystemTime::now();
    let (fresh, expired) = match (
        presign(config(now, Duration::from_secs(300))).await,
        presign(config(
            now - Duration::from_secs(3600),
            Duration::from_secs(60),
        ))
        .await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(format!("presigning: {}", answer(&e))),
    };
    let mut evidence = Vec::new();
    match send(p, &fresh, fresh.uri(), None).await {
        Ok((200, got)) if got == body => evidence.push("200 with the object".to_owned()),
        Ok((status, _)) => return fail(format!("the presigned GET answered {status}")),
        Err(e) => return fail(e),
    }
    let mut refused = true;
    for (what, req, url) in [
        ("tampered", &fresh, tampered(fresh.uri())),
        ("expired", &expired, expired.uri().to_owned()),
    ] {
        match send(p, req, &url, None).await {
            Ok((status, _)) => {
                // S3 says 403; any refusal keeps the object safe (Garage: expired 400).
                refused &= (400..500).contains(&status);
                evidence.push(format!("{what} {status}"));
            }
            Err(e) => return fail(format!("{what}: {e}")),
        }
    }
    let evidence = evidence.join("; ");
    if refused {
        pass(evidence)
    } else {
        fail(evidence)
    }
}

pub(super) async fn put(p: &Probe) -> Outcome {
    let key = p.key("presign/put");
    let body = Bytes::from(unique_bytes(1024));
    let req = match p
        .client
        .put_object()
        .bucket(&p.bucket)
        .key(&key)
        .presigned(config(SystemTime::now(), Duration::from_secs(300)))
        .await
    {
        Ok(req) => req,
        Err(e) => return fail(format!("presigning: {}", answer(&e))),
    };
    let tampered_status = match send(
        p,
        &req,
        &tampered(req.uri()),
        Some(Bytes::from_static(b"nope")),
    )
    .await
    {
        Ok((status, _)) => status,
        Err(e) => return fail(format!("tampered: {e}")),
    };
    match send(p, &req, req.uri(), Some(body.clone())).await {
        Ok((200, _)) => {}
        Ok((status, _)) => return fail(format!("the presigned PUT answered {status}")),
        Err(e) => return fail(e),
    }
    let stored = match p.get(&key, None).await {
        Ok(got) => got == body,
        Err(e) => return fail(format!("GetObject after the PUT: {}", answer(&e))),
    };
    let evidence = format!("200, object stored; tampered {tampered_status}");
    match (stored, tampered_status) {
        (true, 400..=499) => pass(evidence),
        (true, _) => fail(evidence),
        (false, _) => fail("the PUT answered 200 but the object holds other bytes"),
    }
}
