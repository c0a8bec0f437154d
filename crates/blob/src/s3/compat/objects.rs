//! Addressing, listing, ranged reads, DeleteObjects and CopyObject.

use std::net::IpAddr;

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns};
use bytes::Bytes;

use super::{Outcome, Probe, answer, fail, pass, skipped, status_and_code, unsupported};
use crate::conformance::unique_bytes;

/// Writes an object with one client and reads it back with another.
async fn round_trip(p: &Probe, client: &aws_sdk_s3::Client, key: &str) -> Outcome {
    let body = Bytes::from(unique_bytes(1024));
    if let Err(e) = client
        .put_object()
        .bucket(&p.bucket)
        .key(key)
        .body(SdkBody::from(body.clone()))
        .send()
        .await
    {
        return fail(format!("PutObject: {}", answer(&e)));
    }
    match client.get_object().bucket(&p.bucket).key(key).send().await {
        Err(e) => fail(format!("GetObject: {}", answer(&e))),
        Ok(out) => match out.body.collect().await.map(|b| b.into_bytes()) {
            Ok(b) if b == body => pass("PutObject and GetObject of 1 KiB"),
            Ok(_) => fail("GetObject answered other bytes"),
            Err(e) => fail(format!("GetObject body: {e}")),
        },
    }
}

pub(super) async fn path_style(p: &Probe) -> Outcome {
    match p.client_with(p.sdk_credentials(), |b| b.force_path_style(true)) {
        Ok(c) => round_trip(p, &c, &p.key("addressing/path-style")).await,
        Err(e) => fail(e.to_string()),
    }
}

/// Resolves every name to one address: `<bucket>.<domain>` to the endpoint's IP.
#[derive(Clone, Debug)]
struct FixedAddress(IpAddr);

impl ResolveDns for FixedAddress {
    fn resolve_dns<'a>(&'a self, _name: &'a str) -> DnsFuture<'a> {
        DnsFuture::ready(Ok(vec![self.0]))
    }
}

pub(super) async fn virtual_host(p: &Probe) -> Outcome {
    let key = p.key("addressing/virtual-host");
    let Some(endpoint) = p.cfg.endpoint_url.as_deref() else {
        // AWS: virtual-host is the SDK's default and the endpoint's own DNS has the name.
        return match p.client_with(p.sdk_credentials(), |b| b.force_path_style(false)) {
            Ok(c) => round_trip(p, &c, &key).await,
            Err(e) => fail(e.to_string()),
        };
    };
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return fail(format!("the endpoint {endpoint} is not a URL"));
    };
    let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
    let client = match (host.parse::<IpAddr>(), &p.options.virtual_host_domain) {
        (Ok(_), None) => {
            return skipped(
                "the endpoint is an IP address, which cannot carry a bucket name; \
                 --virtual-host-domain names the store's domain to probe",
            );
        }
        (Ok(ip), Some(domain)) => {
            let mut named = url.clone();
            if named.set_host(Some(domain)).is_err() {
                return fail(format!("{domain} is not a host name"));
            }
            let tls = match crate::s3::config::tls_context(p.cfg.ca_bundle.as_deref()) {
                Ok(tls) => tls,
                Err(e) => return fail(e.to_string()),
            };
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(crate::s3::config::RUSTLS)
                .tls_context(tls)
                .build_with_resolver(FixedAddress(ip));
            let named = named.as_str().trim_end_matches('/').to_owned();
            p.client_with(p.sdk_credentials(), |b| {
                b.force_path_style(false)
                    .endpoint_url(named)
                    .http_client(http)
            })
        }
        (Err(_), _) => p.client_with(p.sdk_credentials(), |b| b.force_path_style(false)),
    };
    match client {
        Ok(c) => match round_trip(p, &c, &key).await {
            (super::Status::Fail, evidence) => unsupported(evidence),
            ok => ok,
        },
        Err(e) => fail(e.to_string()),
    }
}

pub(super) async fn list_pagination(p: &Probe) -> Outcome {
    let prefix = p.prefix("list/pages/");
    for i in 0..3 {
        if let Err(e) = p
            .put(&p.key(&format!("list/pages/{i}")), Bytes::from_static(b"x"))
            .await
        {
            return fail(e);
        }
    }
    let (mut keys, mut pages, mut token) = (Vec::new(), 0, None);
    // Three keys in pages of two: two pages; more than four means the token is ignored.
    while pages < 4 {
        let page = match p
            .client
            .list_objects_v2()
            .bucket(&p.bucket)
            .prefix(&prefix)
            .max_keys(2)
            .set_continuation_token(token.take())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) => return fail(format!("ListObjectsV2 page {}: {}", pages + 1, answer(&e))),
        };
        pages += 1;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    if keys.len() == 3 && pages == 2 {
        pass("3 keys in 2 pages of at most 2")
    } else {
        fail(format!(
            "{} distinct keys in {pages} pages (expected 3 in 2)",
            keys.len()
        ))
    }
}

pub(super) async fn list_delimiter(p: &Probe) -> Outcome {
    let prefix = p.prefix("list/tree/");
    for name in ["a/1", "a/2", "b"] {
        if let Err(e) = p
            .put(
                &p.key(&format!("list/tree/{name}")),
                Bytes::from_static(b"x"),
            )
            .await
        {
            return fail(e);
        }
    }
    let page = match p
        .client
        .list_objects_v2()
        .bucket(&p.bucket)
        .prefix(&prefix)
        .delimiter("/")
        .send()
        .await
    {
        Ok(page) => page,
        Err(e) => return fail(format!("ListObjectsV2: {}", answer(&e))),
    };
    let common: Vec<_> = page
        .common_prefixes()
        .iter()
        .filter_map(|c| c.prefix().map(|s| s.trim_start_matches(&prefix).to_owned()))
        .collect();
    let keys: Vec<_> = page
        .contents()
        .iter()
        .filter_map(|o| o.key().map(|s| s.trim_start_matches(&prefix).to_owned()))
        .collect();
    if common == ["a/"] && keys == ["b"] {
        pass("common prefix a/ and key b")
    } else {
        fail(format!(
            "common prefixes {common:?}, keys {keys:?} (expected [\"a/\"], [\"b\"])"
        ))
    }
}

/// One object of 1,000 bytes that every range probe reads.
pub(super) struct Ranges {
    key: String,
    body: Result<Bytes, String>,
}

impl Ranges {
    pub(super) async fn new(p: &Probe) -> Self {
        let key = p.key("ranges");
        let body = Bytes::from(unique_bytes(1000));
        let body = p.put(&key, body.clone()).await.map(|()| body);
        Ranges { key, body }
    }

    async fn read(&self, p: &Probe, range: &str, expect: std::ops::Range<usize>) -> Outcome {
        let body = match &self.body {
            Ok(b) => b,
            Err(e) => return fail(e.clone()),
        };
        match p.get(&self.key, Some(range)).await {
            Ok(got) if got == body[expect.clone()] => {
                pass(format!("{} byte(s) as asked", got.len()))
            }
            Ok(got) if got.len() == body.len() => {
                fail("the whole object: the Range header was ignored")
            }
            Ok(got) => fail(format!(
                "{} bytes that are not bytes {}..{}",
                got.len(),
                expect.start,
                expect.end
            )),
            Err(e) => fail(answer(&e)),
        }
    }

    pub(super) async fn first_byte(&self, p: &Probe) -> Outcome {
        self.read(p, "bytes=0-0", 0..1).await
    }

    pub(super) async fn last_byte(&self, p: &Probe) -> Outcome {
        self.read(p, "bytes=999-999", 999..1000).await
    }

    pub(super) async fn suffix(&self, p: &Probe) -> Outcome {
        self.read(p, "bytes=-10", 990..1000).await
    }

    pub(super) async fn unsatisfiable(&self, p: &Probe) -> Outcome {
        if let Err(e) = &self.body {
            return fail(e.clone());
        }
        match p.get(&self.key, Some("bytes=1000-")).await {
            Ok(got) => fail(format!("answered {} bytes", got.len())),
            Err(e) if status_and_code(&e).0 == Some(416) => pass(answer(&e)),
            Err(e) => fail(answer(&e)),
        }
    }
}

pub(super) async fn delete_objects(p: &Probe) -> Outcome {
    let keys = [p.key("delete/1"), p.key("delete/2")];
    for k in &keys {
        if let Err(e) = p.put(k, Bytes::from_static(b"x")).await {
            return fail(e);
        }
    }
    let objects: Vec<_> = keys
        .iter()
        .map(|k| {
            ObjectIdentifier::builder()
                .key(k)
                .build()
                .expect("key is set")
        })
        .collect();
    let delete = Delete::builder()
        .set_objects(Some(objects))
        .build()
        .expect("objects are set");
    match p
        .client
        .delete_objects()
        .bucket(&p.bucket)
        .delete(delete)
        .send()
        .await
    {
        Err(e) => unsupported(answer(&e)),
        Ok(out) if !out.errors().is_empty() => fail(format!(
            "{} keys not deleted: {}",
            out.errors().len(),
            out.errors()
                .iter()
                .filter_map(|e| e.code())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(_) => {
            for k in &keys {
                if p.client
                    .head_object()
                    .bucket(&p.bucket)
                    .key(k)
                    .send()
                    .await
                    .is_ok()
                {
                    return fail("a key is still there after DeleteObjects answered success");
                }
            }
            pass("2 keys deleted")
        }
    }
}

pub(super) async fn copy_object(p: &Probe) -> Outcome {
    let (from, to) = (p.key("copy/source"), p.key("copy/target"));
    let body = Bytes::from(unique_bytes(2048));
    if let Err(e) = p.put(&from, body.clone()).await {
        return fail(e);
    }
    if let Err(e) = p
        .client
        .copy_object()
        .bucket(&p.bucket)
        .key(&to)
        .copy_source(copy_source(&p.bucket, &from))
        .send()
        .await
    {
        return unsupported(answer(&e));
    }
    match p.get(&to, None).await {
        Ok(got) if got == body => pass("the copy reads back whole"),
        Ok(_) => fail("the copy reads back other bytes"),
        Err(e) => fail(format!("GetObject of the copy: {}", answer(&e))),
    }
}

/// `bucket/key` for the `x-amz-copy-source` header.
pub(super) fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", crate::s3::upload::encode_key(key))
}
