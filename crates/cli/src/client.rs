//! The client commands: thin wrappers over the HTTP API.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::{StatusCode, Url, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use artifactstore_model::api::{EventsPage, Manifest, NameItem, Page, PutResult, VersionInfo};
use artifactstore_model::secret::Secret;
use artifactstore_model::{Digest, Hasher};

use crate::exit::{self, fail};
use crate::target::{self, Target};

/// Files at least this large are looked up with HEAD before they are sent, so that
/// re-running a `put` does not send unchanged large files again.
const SKIP_CHECK_MIN: u64 = 1 << 20;
/// Files up to this size are read once, hashed and sent from memory: reopening a small
/// file and streaming it through blocking reads costs more than its bytes.
const IN_MEMORY_MAX: u64 = 1 << 20;

/// A file's digest and size, and its bytes when it is small enough to send from memory.
fn hash_file(path: &Path) -> std::io::Result<(Digest, u64, Option<bytes::Bytes>)> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() <= IN_MEMORY_MAX {
        let mut buf = Vec::new();
        // Bounded even if the file grows meanwhile: past the limit it is streamed.
        file.take(IN_MEMORY_MAX + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 <= IN_MEMORY_MAX {
            let size = buf.len() as u64;
            return Ok((Digest::of(&buf), size, Some(buf.into())));
        }
    }
    let (digest, size) = artifactstore_blob::rehash_file(path)?;
    Ok((digest, size, None))
}

pub struct Client {
    base: Url,
    http: reqwest::Client,
    /// The same client, following no redirect: file downloads follow the server's
    /// redirects themselves (see `download`).
    no_redirect: reqwest::Client,
    json: bool,
    progress: bool,
    /// `None`: requests go without a token (a server open to anonymous callers).
    token: Option<token::Token>,
}

/// What a version is published with: labels, and how long it is kept.
pub struct Publish<'a> {
    pub labels: &'a [String],
    /// Days until it expires (capped by the server's retention rule).
    pub expires_in_days: Option<u64>,
}

fn parse_labels(labels: &[String]) -> anyhow::Result<Option<serde_json::Map<String, Value>>> {
    if labels.is_empty() {
        return Ok(None);
    }
    let mut out = serde_json::Map::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| fail(exit::USAGE, format!("--label {l:?}: expected KEY=VALUE")))?;
        out.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(Some(out))
}

/// Files to upload: (local file, path inside the version).
fn collect_sources(
    sources: &[PathBuf],
    as_path: Option<&str>,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for src in sources {
        let meta = std::fs::metadata(src).with_context(|| format!("{}", src.display()))?;
        if meta.is_dir() {
            walk(src, src, &mut out)?;
        } else {
            let name = src.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                fail(
                    exit::USAGE,
                    format!("{}: file name is not UTF-8", src.display()),
                )
            })?;
            out.push((src.clone(), name.to_owned()));
        }
    }
    if let Some(as_path) = as_path {
        if out.len() != 1 || sources.len() != 1 || std::fs::metadata(&sources[0])?.is_dir() {
            return Err(fail(exit::USAGE, "--as needs exactly one file"));
        }
        out[0].1 = as_path.to_owned();
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            let rel = path.strip_prefix(root).expect("walked under root");
            let parts: Option<Vec<&str>> =
                rel.components().map(|c| c.as_os_str().to_str()).collect();
            let parts = parts.ok_or_else(|| {
                fail(
                    exit::USAGE,
                    format!("{}: path is not UTF-8", path.display()),
                )
            })?;
            out.push((path.clone(), parts.join("/")));
        }
    }
    Ok(())
}

impl Client {
    /// `ca_cert`: a PEM file of CA certificates trusted for `https://` servers on top
    /// of the system's (a private CA's).
    pub fn new(
        server: &str,
        json: bool,
        auth: &TokenArgs,
        ca_cert: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let base = Url::parse(server)
            .map_err(|e| fail(exit::USAGE, format!("--server {server:?}: {e}")))?;
        let roots = match ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| fail(exit::USAGE, format!("--ca-cert {}: {e}", path.display())))?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| fail(exit::USAGE, format!("--ca-cert {}: {e}", path.display())))?
            }
            None => Vec::new(),
        };
        let builder = || {
            artifactstore_credentials::sources::http_client_builder(Duration::from_secs(10))
                .tls_certs_merge(roots.clone())
        };
        let http = builder().build()?;
        let no_redirect = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let token = token::Source::from_args(auth, |name| std::env::var(name).ok())?
            .map(|source| token::Token::new(source, http.clone()))
            .transpose()?;
        Ok(Client {
            base,
            http,
            no_redirect,
            json,
            progress: !json && std::io::stderr().is_terminal(),
            token,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut p = url.path_segments_mut().expect("http URLs have paths");
            p.pop_if_empty();
            for s in segments {
                p.extend(s.split('/'));
            }
        }
        url
    }

    /// Sends one request, with the bearer token if there is one; returns the token sent.
    async fn transmit(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::Response, Option<Secret>)> {
        let (req, sent) = match &self.token {
            Some(token) => {
                let secret = token.current().await?;
                // bearer_auth marks the header sensitive: its Debug hides the value.
                (req.bearer_auth(secret.expose()), Some(secret))
            }
            None => (req, None),
        };
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                fail(
                    exit::UNREACHABLE,
                    format!("cannot reach {}: {e}", self.base),
                )
            } else {
                anyhow::Error::from(e)
            }
        })?;
        Ok((resp, sent))
    }

    /// Sends a request and turns every failure into a message and an exit code. A
    /// token the server says expired is got again for one retry, if the request can be
    /// sent again (not a streamed upload).
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        self.send_accepting(req, |s| s.is_success() || s == StatusCode::NOT_MODIFIED)
            .await
    }

    /// [`send`](Self::send), taking the answers `ok` accepts as success.
    async fn send_accepting(
        &self,
        req: reqwest::RequestBuilder,
        ok: fn(StatusCode) -> bool,
    ) -> anyhow::Result<reqwest::Response> {
        let replay = req.try_clone();
        let (resp, sent) = self.transmit(req).await?;
        if ok(resp.status()) {
            return Ok(resp);
        }
        let mut status = resp.status();
        let mut text = resp.text().await.unwrap_or_default();
        if let (Some(token), Some(sent), Some(replay)) = (&self.token, &sent, replay)
            && status == StatusCode::UNAUTHORIZED
            && refusal::says_expired(&text)
        {
            token.refetch(sent).await?;
            let (resp, _) = self.transmit(replay).await?;
            if ok(resp.status()) {
                return Ok(resp);
            }
            status = resp.status();
            text = resp.text().await.unwrap_or_default();
        }
        Err(refusal::failure(status, text, sent.is_some()))
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> anyhow::Result<T> {
        Ok(self.send(self.http.get(url)).await?.json().await?)
    }

    /// A version's manifest with every file, following the pages of a large one.
    async fn manifest_all(&self, ns: &str, name: &str, version: &str) -> anyhow::Result<Manifest> {
        let base = self.url(&["v1", "artifacts", ns, name, version]);
        let mut m: Manifest = self.get_json(base.clone()).await?;
        // Later pages must name the version the first one resolved (`latest` can move).
        let exact = self.url(&["v1", "artifacts", ns, name, &m.version.version]);
        while let Some(cursor) = m.next_cursor.take() {
            let mut url = exact.clone();
            url.query_pairs_mut().append_pair("cursor", &cursor);
            let page: Manifest = self.get_json(url).await?;
            m.files.extend(page.files);
            m.next_cursor = page.next_cursor;
        }
        Ok(m)
    }

    fn bar(&self, multi: &MultiProgress, len: u64, label: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {wide_bar}",
            )
            .expect("valid template"),
        );
        bar.set_message(label.to_owned());
        bar
    }

    pub async fn put(
        &self,
        target: &str,
        sources: &[PathBuf],
        as_path: Option<&str>,
        complete: bool,
        publish: &Publish<'_>,
        jobs: usize,
    ) -> anyhow::Result<u8> {
        let (ns, name, version) = Target::version_only(target)?;
        let labels = parse_labels(publish.labels)?;
        let files = collect_sources(sources, as_path)?;
        let multi = MultiProgress::new();
        let results: Vec<anyhow::Result<Uploaded>> = futures::stream::iter(files)
            .map(|(local, remote)| {
                let (ns, name, version, multi) = (&ns, &name, &version, &multi);
                async move {
                    self.put_one(ns, name, version, &local, &remote, multi)
                        .await
                        .with_context(|| remote.clone())
                }
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
        let mut uploaded = Vec::new();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(v) => {
                    if !self.json {
                        let verb = if v.created { "added" } else { "unchanged" };
                        println!("{verb} {} {} {} bytes", v.path, v.digest, v.size);
                    }
                    uploaded.push(v);
                }
                Err(e) => {
                    eprintln!("artifactstore: {e:#}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e.context("some uploads failed; the version was not completed"));
        }
        let mut out = PutOutput {
            files: uploaded,
            version: None,
        };
        if complete {
            let manifest = self
                .post_complete(&ns, &name, &version, labels, publish.expires_in_days)
                .await?;
            if !self.json {
                println!(
                    "completed {ns}/{name}@{version}: {} files, {} bytes",
                    manifest.file_count, manifest.total_size
                );
            }
            out.version = Some(VersionOutput::Manifest(manifest));
        } else if let Some(labels) = labels {
            let url = self.url(&["v1", "artifacts", &ns, &name, &version]);
            let info: VersionInfo = self
                .send(
                    self.http
                        .patch(url)
                        .json(&serde_json::json!({ "labels": labels })),
                )
                .await?
                .json()
                .await?;
            out.version = Some(VersionOutput::Info(info));
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Ok(0)
    }

    async fn put_one(
        &self,
        ns: &str,
        name: &str,
        version: &str,
        local: &Path,
        remote: &str,
        multi: &MultiProgress,
    ) -> anyhow::Result<Uploaded> {
        // Hash first: the server then refuses anything that changed on the way, and an
        // identical retry is answered without sending the bytes again.
        let path = local.to_owned();
        let (digest, size, in_memory) = tokio::task::spawn_blocking(move || hash_file(&path))
            .await?
            .with_context(|| format!("read {}", local.display()))?;
        let url = self.url(&["v1", "artifacts", ns, name, version, remote]);
        if size >= SKIP_CHECK_MIN {
            // Already stored with these bytes? Then do not send them again.
            let head = self.transmit(self.http.head(url.clone())).await;
            if let Ok((head, _)) = head
                && head.status().is_success()
                && head
                    .headers()
                    .get(artifactstore_server::DIGEST_HEADER)
                    .and_then(|v| v.to_str().ok())
                    == Some(digest.to_string().as_str())
            {
                return Ok(Uploaded {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                    version: version.to_owned(),
                    path: remote.to_owned(),
                    digest,
                    size,
                    media_type: None,
                    created_at: None,
                    created: false,
                });
            }
        }
        let bar = self.bar(multi, size, remote);
        let body = match in_memory {
            Some(bytes) => {
                bar.inc(size);
                reqwest::Body::from(bytes)
            }
            None => {
                let file = tokio::fs::File::open(local)
                    .await
                    .with_context(|| format!("open {}", local.display()))?;
                let progress = bar.clone();
                let stream = ReaderStream::with_capacity(file, 256 << 10)
                    .inspect_ok(move |c| progress.inc(c.len() as u64));
                reqwest::Body::wrap_stream(stream)
            }
        };
        let media_type = mime_guess::from_path(remote).first_or_octet_stream();
        let req = self
            .http
            .put(url)
            .header(artifactstore_server::DIGEST_HEADER, digest.to_string())
            .header(header::CONTENT_TYPE, media_type.as_ref())
            .header(header::CONTENT_LENGTH, size)
            .body(body);
        let result = self.send(req).await;
        bar.finish_and_clear();
        let put: PutResult = result?.json().await?;
        Ok(put.into())
    }

    async fn post_complete(
        &self,
        ns: &str,
        name: &str,
        version: &str,
        labels: Option<serde_json::Map<String, Value>>,
        expires_in_days: Option<u64>,
    ) -> anyhow::Result<Manifest> {
        let url = self.url(&["v1", "artifacts", ns, name, version, "complete"]);
        let mut req = self.http.post(url);
        let mut body = serde_json::Map::new();
        if let Some(labels) = labels {
            body.insert("labels".into(), Value::Object(labels));
        }
        if let Some(days) = expires_in_days {
            body.insert("expires_in_days".into(), days.into());
        }
        if !body.is_empty() {
            req = req.json(&body);
        }
        Ok(self.send(req).await?.json().await?)
    }

    pub async fn complete(&self, target: &str, publish: &Publish<'_>) -> anyhow::Result<u8> {
        let (ns, name, version) = Target::version_only(target)?;
        let manifest = self
            .post_complete(
                &ns,
                &name,
                &version,
                parse_labels(publish.labels)?,
                publish.expires_in_days,
            )
            .await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        } else {
            println!(
                "completed {ns}/{name}@{version}: {} files, {} bytes",
                manifest.file_count, manifest.total_size
            );
        }
        Ok(0)
    }

    /// Follows `next_cursor` until the listing is exhausted.
    async fn list_all<T: DeserializeOwned>(&self, segments: &[&str]) -> anyhow::Result<Vec<T>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url(segments);
            url.query_pairs_mut().append_pair("limit", "1000");
            if let Some(c) = &cursor {
                url.query_pairs_mut().append_pair("cursor", c);
            }
            let page: Page<T> = self.get_json(url).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(items),
            }
        }
    }

    pub async fn ls(&self, target: Option<&str>) -> anyhow::Result<u8> {
        let t = target.map(target::parse).transpose()?;
        let (json, lines): (Value, Vec<String>) = match &t {
            None => {
                let items: Vec<NameItem> = self.list_all(&["v1", "artifacts"]).await?;
                let lines = items.iter().map(|i| i.name.clone()).collect();
                (serde_json::to_value(items)?, lines)
            }
            Some(Target {
                namespace,
                name: None,
                ..
            }) => {
                let items: Vec<NameItem> = self.list_all(&["v1", "artifacts", namespace]).await?;
                let lines = items.iter().map(|i| i.name.clone()).collect();
                (serde_json::to_value(items)?, lines)
            }
            Some(Target {
                namespace,
                name: Some(name),
                version: None,
                ..
            }) => {
                let items: Vec<VersionInfo> =
                    self.list_all(&["v1", "artifacts", namespace, name]).await?;
                let lines = items
                    .iter()
                    .map(|v| format!("{:<30} {:<9} {}", v.version, v.state.as_str(), v.created_at))
                    .collect();
                (serde_json::to_value(items)?, lines)
            }
            Some(Target {
                namespace,
                name: Some(name),
                version: Some(version),
                path,
            }) => {
                if path.is_some() {
                    return Err(fail(exit::USAGE, "ls takes NS, NS/NAME or NS/NAME@VERSION"));
                }
                let m = self.manifest_all(namespace, name, version).await?;
                let mut lines = vec![format!(
                    "{}/{}@{} ({}, {} files, {} bytes)",
                    namespace,
                    name,
                    m.version.version,
                    m.version.state.as_str(),
                    m.file_count,
                    m.total_size
                )];
                for f in &m.files {
                    lines.push(format!("{} {:>12} {}", f.digest, f.size, f.path));
                }
                (serde_json::to_value(m)?, lines)
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            for l in lines {
                println!("{l}");
            }
        }
        Ok(0)
    }

    pub async fn rm(&self, target: &str) -> anyhow::Result<u8> {
        let (ns, name, version) = Target::version_only(target)?;
        let v: VersionInfo = self
            .send(
                self.http
                    .delete(self.url(&["v1", "artifacts", &ns, &name, &version])),
            )
            .await?
            .json()
            .await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("deleted {ns}/{name}@{version}");
        }
        Ok(0)
    }

    pub async fn events(&self, mut after: i64, follow: bool) -> anyhow::Result<u8> {
        loop {
            let mut url = self.url(&["v1", "events"]);
            url.query_pairs_mut()
                .append_pair("after", &after.to_string())
                .append_pair("limit", "1000")
                .append_pair("wait", if follow { "30" } else { "0" });
            let page: EventsPage = self.get_json(url).await?;
            for e in &page.events {
                if self.json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!("{}", event_line(e));
                }
            }
            after = page.next_after;
            let events = page.events;
            if events.is_empty() && !follow {
                return Ok(0);
            }
        }
    }
}

mod download;
mod gc;
mod glob;
mod output;
mod refusal;
mod token;
mod version_dir;
use output::{PutOutput, Uploaded, VersionOutput, event_line};
pub use token::TokenArgs;
