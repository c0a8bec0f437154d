//! Quotas on the real binary: the upload that would pass a namespace's `[[quota]]` is
//! refused with 507 `quota_exceeded` and leaves nothing, usage is reported with the
//! namespace's names, and deleting frees room.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const QUOTA: &str = r#"
[[quota]]
namespaces = ["small"]
max_bytes = 100000
max_versions = 2
"#;

struct Answer {
    status: StatusCode,
    body: Value,
}

fn send(s: &Server, method: &str, rest: &str, body: Option<Vec<u8>>, chunked: bool) -> Answer {
    let (url, method) = (s.artifacts(rest), method.to_owned());
    block_on(async move {
        let mut req = http().request(method.parse().unwrap(), url);
        if let Some(t) = suite_token() {
            req = req.bearer_auth(t);
        }
        if let Some(data) = body {
            req = if chunked {
                // No Content-Length: the size is known only at the end.
                let stream = futures::stream::iter(
                    data.chunks(8192)
                        .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>(),
                );
                req.body(reqwest::Body::wrap_stream(stream))
            } else {
                req.body(data)
            };
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    })
}

#[test]
fn uploads_past_the_quota_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, QUOTA).unwrap();
    let s = Server::start_with_env(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[
            ("ARTIFACTSTORE_GC_GRACE_SECS", "0"),
            ("ARTIFACTSTORE_GC_INTERVAL_SECS", "0"),
        ],
    );
    let first = bytes(60_000, 1);
    assert_eq!(
        send(&s, "PUT", "small/app/1/a.bin", Some(first.clone()), false).status,
        StatusCode::CREATED
    );
    let usage = send(&s, "GET", "small", None, false).body;
    assert_eq!(usage["usage"]["bytes"], 60_000, "{usage}");
    assert_eq!(usage["usage"]["versions"], 1);
    assert_eq!(usage["usage"]["max_bytes"], 100_000);
    assert_eq!(usage["usage"]["max_versions"], 2);

    // The same file again is answered as such, though it would not fit a second time.
    let again = send(&s, "PUT", "small/app/1/a.bin", Some(first.clone()), false);
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["created"], false);
    // 60,000 more do not fit: refused before the body is read, nothing stored.
    let second = bytes(60_000, 2);
    let a = send(&s, "PUT", "small/app/1/b.bin", Some(second.clone()), false);
    assert_eq!(a.status, StatusCode::INSUFFICIENT_STORAGE, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "quota_exceeded");
    assert!(!s.holds_blob(&second), "a refused upload left its content");
    // Sent without a length, it is refused when its file would be recorded.
    let a = send(&s, "PUT", "small/app/1/c.bin", Some(second.clone()), true);
    assert_eq!(a.body["error"]["code"], "quota_exceeded", "{}", a.body);
    assert_eq!(
        send(&s, "GET", "small/app/1/c.bin", None, false).status,
        StatusCode::NOT_FOUND
    );
    let o = s.cli(&["--json", "gc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!s.holds_blob(&second), "its unreferenced blob is collected");

    // Versions: a second fits, a third does not.
    assert_eq!(
        send(&s, "PUT", "small/app/2/a.bin", Some(b"x".to_vec()), false).status,
        StatusCode::CREATED
    );
    let a = send(&s, "PUT", "small/app/3/a.bin", Some(b"y".to_vec()), false);
    assert_eq!(a.body["error"]["code"], "quota_exceeded", "{}", a.body);
    assert_eq!(
        send(&s, "GET", "small/app/3", None, false).status,
        StatusCode::NOT_FOUND
    );
    // Other namespaces have no quota.
    assert_eq!(
        send(&s, "PUT", "big/app/1/a.bin", Some(second.clone()), false).status,
        StatusCode::CREATED
    );

    // Deleting frees room.
    assert_eq!(
        send(&s, "DELETE", "small/app/1", None, false).status,
        StatusCode::OK
    );
    let usage = send(&s, "GET", "small", None, false).body;
    assert_eq!(
        (&usage["usage"]["bytes"], &usage["usage"]["versions"]),
        (&Value::from(1), &Value::from(1))
    );
    assert_eq!(
        send(&s, "PUT", "small/app/3/a.bin", Some(second), false).status,
        StatusCode::CREATED
    );
}
