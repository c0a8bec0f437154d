//! `get` of one file, and the file downloads of `get` and `get -o DIR`, which follow the
//! server's redirects themselves. A server with
//! `[s3] download = "redirect"` answers a file GET `307` to a presigned GET of its blob
//! store, with the file's digest on the redirect. The store's answer does not carry
//! that digest, and the bearer token must never reach the store: a presigned URL is its
//! own credential, and the store is not the server the token was given to. reqwest
//! strips `Authorization` only when the host, port or scheme changes, which a store
//! behind the server's own origin would not; so redirects are followed here, the token
//! sent only to the server's origin and never past a redirect to the store.

use super::*;

/// Redirects followed for one download, as reqwest's default policy allows.
const MAX_REDIRECTS: usize = 10;

/// A download's answer, and the digest the server gave for it.
pub(super) struct Downloaded {
    pub resp: reqwest::Response,
    /// `X-Artifact-Digest` of the server's answer (the redirect, where there was one).
    pub digest: Option<Digest>,
}

fn digest_of(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers()
        .get(artifactstore_server::DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Where a redirect leads, resolved against the URL it answered.
fn location(resp: &reqwest::Response) -> anyhow::Result<Url> {
    let to = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the server redirected without a Location")?;
    // No URL in the message: a presigned one is a credential.
    resp.url()
        .join(to)
        .map_err(|e| anyhow::anyhow!("the server redirected to an invalid URL: {e}"))
}

impl Client {
    /// `get NS/NAME@VERSION/PATH [-o FILE]`: one file, to stdout or atomically to FILE;
    /// `get NS/NAME@VERSION -o DIR`: every file of the version (see `version_dir`).
    pub async fn get(
        &self,
        target: &str,
        output: Option<&Path>,
        jobs: usize,
        includes: &[String],
    ) -> anyhow::Result<u8> {
        let t = target::parse(target)?;
        let (Some(name), Some(version)) = (&t.name, &t.version) else {
            return Err(fail(
                exit::USAGE,
                format!("{target:?}: expected NS/NAME@VERSION/PATH or NS/NAME@VERSION -o DIR"),
            ));
        };
        let Some(path) = &t.path else {
            let dir = output.ok_or_else(|| {
                fail(
                    exit::USAGE,
                    "a whole version is written into a directory: give -o DIR",
                )
            })?;
            return self
                .get_version_into(&t.namespace, name, version, dir, jobs, includes)
                .await;
        };
        if !includes.is_empty() {
            return Err(fail(
                exit::USAGE,
                "--include selects files of a whole version (NS/NAME@VERSION -o DIR)",
            ));
        }
        let url = self.url(&["v1", "artifacts", &t.namespace, name, version, path]);
        let download::Downloaded { resp, digest } = self.download(url).await?;
        let expected = digest.context("server sent no X-Artifact-Digest header")?;
        if let Some(out) = output {
            let multi = MultiProgress::new();
            let bar = self.bar(&multi, resp.content_length().unwrap_or(0), path);
            let saved = version_dir::save_verified(resp.bytes_stream(), expected, out, &bar).await;
            bar.finish_and_clear();
            return saved.map(|()| 0);
        }
        let mut hasher = Hasher::new();
        let mut body = resp.bytes_stream();
        let mut stdout = tokio::io::stdout();
        while let Some(chunk) = body.try_next().await? {
            hasher.update(&chunk);
            stdout.write_all(&chunk).await?;
        }
        stdout.flush().await?;
        let actual = hasher.finish();
        if actual != expected {
            return Err(fail(
                exit::INTEGRITY,
                format!("downloaded bytes hash to {actual}, expected {expected}"),
            ));
        }
        Ok(0)
    }

    /// GETs a file. A redirect that carries the digest hands the download to the blob
    /// store, fetched without the token; any other redirect is followed as reqwest
    /// would, with the token only while the URL stays on the server's origin.
    pub(super) async fn download(&self, url: Url) -> anyhow::Result<Downloaded> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let req = self.no_redirect.get(url.clone());
            let resp = if url.origin() == self.base.origin() {
                self.send_accepting(req, |s| s.is_success() || s.is_redirection())
                    .await?
            } else {
                self.send_without_token(req).await?
            };
            if !resp.status().is_redirection() {
                let digest = digest_of(&resp);
                return Ok(Downloaded { resp, digest });
            }
            let next = location(&resp)?;
            if let Some(digest) = digest_of(&resp) {
                let stored = self.send_without_token(self.http.get(next)).await?;
                if !stored.status().is_success() {
                    return Err(fail(
                        exit::FAILURE,
                        format!(
                            "the blob store {} redirected the download to answered HTTP {}",
                            self.base,
                            stored.status().as_u16()
                        ),
                    ));
                }
                return Ok(Downloaded {
                    resp: stored,
                    digest: Some(digest),
                });
            }
            url = next;
        }
        Err(fail(exit::FAILURE, "too many redirects"))
    }

    /// Sends a request to somewhere other than the server (the blob store, or where a
    /// redirect led): no token, and no URL in any message.
    async fn send_without_token(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            let e = e.without_url();
            if e.is_connect() || e.is_timeout() {
                fail(
                    exit::UNREACHABLE,
                    format!(
                        "cannot reach where {} redirected the download: {e}",
                        self.base
                    ),
                )
            } else {
                anyhow::Error::from(e)
            }
        })?;
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            return Ok(resp);
        }
        // The store's own error (S3 XML) says why; the URL stays out of it.
        let text = resp.text().await.unwrap_or_default();
        let reason = text
            .split("<Code>")
            .nth(1)
            .and_then(|c| c.split('<').next())
            .unwrap_or("no reason given");
        Err(fail(
            match status {
                StatusCode::NOT_FOUND => exit::NOT_FOUND,
                _ => exit::FAILURE,
            },
            format!(
                "where {} redirected the download answered HTTP {} ({reason})",
                self.base,
                status.as_u16()
            ),
        ))
    }
}
