//! What is redirected and how clients follow it: curl, boto3's parser, reqwest, ranges,
//! expiry, what is answered here instead, and the proxy default.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_carry_a_presigned_url_that_curl_boto3_and_reqwest_follow() {
    let rig = Rig::start(Setup {
        download: Some("redirect"),
        ..Setup::default()
    })
    .await;
    let text = bytes(300_000, 71);
    let html = b"<html><script>alert(1)</script></html>".to_vec();
    rig.put(None, "redir/app/1/logs/run 1.txt", "text/plain", &text)
        .await;
    rig.put(None, "redir/app/1/report.html", "text/html", &html)
        .await;
    let (text_url, html_url) = (
        rig.url("artifacts/redir/app/1/logs/run%201.txt"),
        rig.url("artifacts/redir/app/1/report.html"),
    );
    let (text_digest, html_digest) = (digest(&text), digest(&html));

    // The redirect, and its URL followed by curl: the exact bytes.
    let location = redirected(&text_url, None, &text_digest).await;
    let resp = client().get(&text_url).send().await.unwrap();
    assert_eq!(header(&resp, "x-artifact-version"), Some("1"));
    let (ok, got, _) = curl(&[&location]);
    assert!(ok && got == text, "curl on the Location");
    let (ok, got, _) = curl(&["-L", &text_url]);
    assert!(ok && got == text, "curl -L on the file");

    // What the store is asked to answer with is what the proxy path sends.
    for (url, data, digest) in [
        (&text_url, &text, &text_digest),
        (&html_url, &html, &html_digest),
    ] {
        let (proxy_headers, body) = proxied(url, None).await;
        assert!(&body == data, "{url}?redirect=0: other bytes");
        assert_eq!(proxy_headers["content-security-policy"], "sandbox");
        let location = redirected(url, None, digest).await;
        let q = query(&location);
        assert_eq!(
            q.get("response-content-type").map(String::as_str),
            Some(proxy_headers["content-type"].to_str().unwrap()),
            "{url}"
        );
        assert_eq!(
            q.get("response-content-disposition").map(String::as_str),
            proxy_headers
                .get("content-disposition")
                .map(|v| v.to_str().unwrap()),
            "{url}"
        );
        let (ok, got, last) = curl(&["-L", url]);
        assert!(ok && &got == data, "curl -L {url}");
        if store_honours_overrides() {
            let ct = format!(
                "content-type: {}",
                proxy_headers["content-type"].to_str().unwrap()
            );
            assert!(last.contains(&ct.to_ascii_lowercase()), "{url}: {last}");
            if let Some(d) = proxy_headers.get("content-disposition") {
                let d = format!("content-disposition: {}", d.to_str().unwrap());
                assert!(last.contains(&d.to_ascii_lowercase()), "{url}: {last}");
            }
        }
    }
    assert!(
        query(&redirected(&html_url, None, &html_digest).await)["response-content-disposition"]
            .starts_with("attachment; filename*=UTF-8''report.html")
    );

    // boto3's parser agrees with the URL, and urllib fetches the bytes through it.
    let location = redirected(&text_url, None, &text_digest).await;
    let o = Command::new("python3")
        .args(["-c", BOTO3_CHECK, &location, "60"])
        .output()
        .unwrap();
    assert!(o.status.success(), "boto3 check: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), sha256_hex(&text));

    // Ranges: curl and reqwest send `Range` again to the store, which answers it.
    let (ok, got, last) = curl(&["-L", "-r", "1000-1999", &text_url]);
    assert!(ok && got == text[1000..2000], "curl -L -r: {last}");
    assert!(last.starts_with("1.1 206"), "{last}");
    let follow = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = follow
        .get(&text_url)
        .header("range", "bytes=299990-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert!(resp.bytes().await.unwrap() == text[299_990..]);
    // An unsatisfiable range is answered here, without a URL.
    let resp = client()
        .get(&text_url)
        .header("range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert!(header(&resp, "location").is_none());

    // Answered here: HEAD, an If-None-Match hit, ?redirect=0, an inline active document.
    let resp = client().head(&text_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), Some("300000"));
    assert!(header(&resp, "location").is_none());
    let resp = client()
        .get(&text_url)
        .header("if-none-match", format!("\"{text_digest}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(header(&resp, "location").is_none());
    let resp = client()
        .get(format!("{html_url}?inline=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "inline HTML is proxied");
    assert_eq!(header(&resp, "content-security-policy"), Some("sandbox"));
    assert!(resp.bytes().await.unwrap() == html);

    // The blob route redirects the same way.
    let location = redirected(
        &rig.url(&format!("blobs/{text_digest}")),
        None,
        &text_digest,
    )
    .await;
    let (ok, got, _) = curl(&[&location]);
    assert!(ok && got == text, "the blob's URL");

    let redirects = rig.redirects_counted().await;
    assert!(redirects >= 10, "{redirects} redirects counted");
    assert!(
        !rig.server.logs().contains("X-Amz-Signature"),
        "a presigned URL was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_stop_working_when_they_expire() {
    let rig = Rig::start(Setup {
        download: Some("redirect"),
        expiry_secs: Some(1),
        ..Setup::default()
    })
    .await;
    let data = bytes(10_000, 72);
    rig.put(None, "redir/app/1/a.bin", "application/octet-stream", &data)
        .await;
    let location = redirected(
        &rig.url("artifacts/redir/app/1/a.bin"),
        None,
        &digest(&data),
    )
    .await;
    assert_eq!(query(&location)["X-Amz-Expires"], "1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, _, last) = curl(&[&location]);
    // S3 says 403; Garage 400. Either way the store refuses it.
    assert!(
        last.starts_with("1.1 403") || last.starts_with("1.1 400"),
        "an expired URL answered {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_proxied_by_default() {
    let rig = Rig::start(Setup::default()).await;
    let data = bytes(50_000, 76);
    rig.put(None, "redir/app/1/a.bin", "application/octet-stream", &data)
        .await;
    let resp = client()
        .get(rig.url("artifacts/redir/app/1/a.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "location").is_none());
    assert!(resp.bytes().await.unwrap() == data);
    assert_eq!(rig.redirects_counted().await, 0);
}
