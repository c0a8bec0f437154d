//! Who gets a URL: never a caller who may not read the file, nor for what is gone; and
//! the CLI follows the redirect without its token, even to a store on the server's own
//! origin, and checks the digest the server gave.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_redirect_for_a_caller_who_may_not_read_nor_for_what_is_gone() {
    let rig = Rig::start(Setup {
        download: Some("redirect"),
        config: &auth_config(),
        ..Setup::default()
    })
    .await;
    let data = bytes(5_000, 73);
    rig.put(Some(WRITER), "redir/app/1/a.txt", "text/plain", &data)
        .await;
    rig.put(Some(WRITER), "redir/app/2/a.txt", "text/plain", &data)
        .await;
    let d = digest(&data);
    let file = rig.url("artifacts/redir/app/1/a.txt");
    let blob = rig.url(&format!("blobs/{d}"));
    redirected(&file, Some(WRITER), &d).await;
    redirected(&blob, Some(WRITER), &d).await;
    let refused = |url: String, token: Option<&'static str>, want: StatusCode| async move {
        let resp = with_token(client().get(&url), token).send().await.unwrap();
        assert_eq!(resp.status(), want, "GET {url} as {token:?}");
        assert!(
            header(&resp, "location").is_none(),
            "{url}: {token:?} got a URL"
        );
        assert!(
            !resp.text().await.unwrap().contains("X-Amz"),
            "{url}: {token:?}"
        );
    };
    refused(file.clone(), None, StatusCode::UNAUTHORIZED).await;
    refused(file.clone(), Some(STRANGER), StatusCode::FORBIDDEN).await;
    refused(blob.clone(), Some(STRANGER), StatusCode::NOT_FOUND).await;
    // A blob no readable version holds does not exist for this caller.
    refused(blob.clone(), None, StatusCode::NOT_FOUND).await;
    refused(
        rig.url("artifacts/redir/app/1/missing.txt"),
        Some(WRITER),
        StatusCode::NOT_FOUND,
    )
    .await;
    refused(
        rig.url("artifacts/redir/app/1/..%2Fa.txt"),
        Some(WRITER),
        StatusCode::BAD_REQUEST,
    )
    .await;
    // A deleted version's files are gone; the blob is still held by version 2 only.
    for v in ["1", "2"] {
        let resp = client()
            .delete(rig.url(&format!("artifacts/redir/app/{v}")))
            .bearer_auth(WRITER)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "delete {v}: {}", resp.status());
        refused(
            rig.url(&format!("artifacts/redir/app/{v}/a.txt")),
            Some(WRITER),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    refused(blob, Some(WRITER), StatusCode::NOT_FOUND).await;
    assert_eq!(rig.redirects_counted().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_follows_the_redirect_without_its_token_and_checks_the_digest() {
    let rig = Rig::start(Setup {
        download: Some("redirect"),
        config: &auth_config(),
        ..Setup::default()
    })
    .await;
    let (a, b) = (bytes(700_000, 74), bytes(1_000, 75));
    rig.put(
        Some(WRITER),
        "redir/cli/1/a.bin",
        "application/octet-stream",
        &a,
    )
    .await;
    rig.put(Some(WRITER), "redir/cli/1/sub/b.txt", "text/plain", &b)
        .await;
    let out = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .env("ARTIFACTSTORE_URL", &rig.server.url)
            .env("ARTIFACTSTORE_TOKEN", WRITER)
            .args(args)
            .output()
            .unwrap()
    };
    let file = out.path().join("a.bin");
    let o = cli(&["get", "redir/cli@1/a.bin", "-o", file.to_str().unwrap()]);
    assert!(o.status.success(), "get: {}", stderr(&o));
    assert!(std::fs::read(&file).unwrap() == a);
    let o = cli(&["get", "redir/cli@1/sub/b.txt"]);
    assert!(
        o.status.success() && o.stdout == b,
        "get to stdout: {}",
        stderr(&o)
    );
    let dir = out.path().join("v1");
    let o = cli(&["get", "redir/cli@1", "-o", dir.to_str().unwrap()]);
    assert!(o.status.success(), "get -o DIR: {}", stderr(&o));
    assert!(std::fs::read(dir.join("a.bin")).unwrap() == a);
    assert!(std::fs::read(dir.join("sub/b.txt")).unwrap() == b);
    assert_eq!(
        rig.redirects_counted().await,
        4,
        "every file came by redirect"
    );

    // The store saw the CLI's presigned GETs, and never the token.
    let seen = rig.proxy.seen();
    assert!(
        seen.contains("X-Amz-Signature="),
        "no presigned GET reached the store"
    );
    assert!(!seen.contains(WRITER), "the token reached the store");
    assert!(
        !seen.to_ascii_lowercase().contains("bearer"),
        "a bearer token reached the store"
    );

    // What the store sends is checked against the digest the server gave.
    if let Some(s3s) = &rig.s3s {
        let d = artifactstore_model::Digest::of(&a).hex();
        let object = s3s.root.path().join(&s3s.bucket).join(format!(
            "{}blobs/sha256/{}/{d}",
            rig.prefix,
            &d[..2]
        ));
        let mut tampered = a.clone();
        tampered[0] ^= 1;
        std::fs::write(&object, &tampered).unwrap();
        let again = out.path().join("again.bin");
        let o = cli(&["get", "redir/cli@1/a.bin", "-o", again.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(5), "integrity: {}", stderr(&o));
        assert!(!again.exists(), "an unverified file took its name");
    }
}

/// The path and `Authorization` of each request a stand-in server received.
type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A stand-in for a server and its store on one origin: a GET under `/v1/` is answered
/// 307 to `/store/blob?…` with `digest`, a GET of that is answered `body`.
async fn one_origin(body: Vec<u8>, digest: String) -> (SocketAddr, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Requests::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (record, body, d) = (record.clone(), body.clone(), digest.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    head.drain(..end);
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let auth = text.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_owned())
                    });
                    record.lock().unwrap().push((path.clone(), auth));
                    let answer = if path.starts_with("/store/") {
                        let mut a = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        a.extend_from_slice(&body);
                        a
                    } else {
                        format!(
                            "HTTP/1.1 307 Temporary Redirect\r\nlocation: /store/blob?X-Amz-Signature=00\r\n\
                             x-artifact-digest: {d}\r\ncontent-length: 0\r\n\r\n"
                        )
                        .into_bytes()
                    };
                    if socket.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A store behind the server's own origin (one host and port, as behind one reverse
/// proxy) is where reqwest would keep the token on a redirect: the CLI must not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_servers_own_origin_never_sees_the_token() {
    let body = b"same origin".to_vec();
    let (addr, seen) = one_origin(body.clone(), digest(&body)).await;
    let o = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .env("ARTIFACTSTORE_URL", format!("http://{addr}"))
            .env("ARTIFACTSTORE_TOKEN", WRITER)
            .args(["get", "ns/name@1/f.txt"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(o.status.success(), "get: {}", stderr(&o));
    assert_eq!(o.stdout, body);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (
                "/v1/artifacts/ns/name/1/f.txt".to_owned(),
                Some(format!("Bearer {WRITER}"))
            ),
            ("/store/blob?X-Amz-Signature=00".to_owned(), None),
        ]
    );
}
