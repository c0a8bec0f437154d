//! `artifactstore storage verify`: proves that the configured backend works, with the
//! same configuration `serve` reads.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::Serialize;

use artifactstore_blob::conformance::{chunked, unique_bytes};
use artifactstore_blob::{BlobStore, FsBlobStore};
use artifactstore_model::Digest;

use crate::config::{self, Backend, ServeFlags};
use crate::exit::{self, fail};
use crate::serve::StoreArgs;
use crate::store::{CredentialInfo, s3_store};

#[derive(Serialize)]
struct Check {
    name: &'static str,
    /// `pass`, `fail` or `skip`.
    status: &'static str,
    detail: String,
    millis: u64,
}

#[derive(Serialize)]
struct Report {
    backend: &'static str,
    target: String,
    credentials: Option<CredentialInfo>,
    checks: Vec<Check>,
    ok: bool,
}

struct Runner {
    checks: Vec<Check>,
    failed: bool,
}

impl Runner {
    /// Runs a check unless an earlier one failed (then it is skipped).
    async fn run<F, Fut>(&mut self, name: &'static str, f: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<String>>,
    {
        if self.failed {
            self.checks.push(Check {
                name,
                status: "skip",
                detail: "skipped after an earlier failure".into(),
                millis: 0,
            });
            return;
        }
        let start = Instant::now();
        let result = f().await;
        let millis = start.elapsed().as_millis() as u64;
        let (status, detail) = match result {
            Ok(d) => ("pass", d),
            Err(e) => {
                self.failed = true;
                ("fail", format!("{e:#}"))
            }
        };
        self.checks.push(Check {
            name,
            status,
            detail,
            millis,
        });
    }
}

async fn read_all(
    store: &dyn BlobStore,
    d: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> anyhow::Result<Vec<u8>> {
    let read = store.get(d, range).await?;
    let chunks: Vec<bytes::Bytes> = read.body.try_collect().await?;
    Ok(chunks.concat())
}

/// MinIO (and RustFS) answer `/minio/health/live`; other stores do not.
async fn minio_health(endpoint: &str) -> Option<String> {
    let url = format!("{}/minio/health/live", endpoint.trim_end_matches('/'));
    let client = artifactstore_credentials::sources::http_client_builder(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client.get(&url).send().await.ok()?;
    resp.status()
        .is_success()
        .then(|| format!("{url} answered {}", resp.status().as_u16()))
}

pub async fn verify(args: StoreArgs, json: bool) -> anyhow::Result<u8> {
    let flags = ServeFlags {
        backend: args.backend,
        data_dir: args.data_dir,
        ..Default::default()
    };
    let cfg = config::load(args.config.as_deref(), &flags)
        .map_err(|e| fail(exit::USAGE, format!("{e:#}")))?;
    let mut runner = Runner {
        checks: Vec::new(),
        failed: false,
    };
    let (backend, target, credentials, store): (_, _, _, std::sync::Arc<dyn BlobStore>) = match cfg
        .backend
    {
        Backend::Fs => {
            let store = FsBlobStore::open(&cfg.data_dir)?;
            (
                "fs",
                cfg.data_dir.display().to_string(),
                None,
                std::sync::Arc::new(store),
            )
        }
        Backend::S3 => {
            let (store, mut info, cache) = s3_store(&cfg.s3)?;
            // A credential that cannot be fetched fails here, naming its source.
            info.load_expiry(&cache).await?;
            let target = format!(
                "s3://{}/{} at {}",
                store.bucket(),
                cfg.s3.prefix,
                store.endpoint()
            );
            let store = std::sync::Arc::new(store);
            let endpoint = cfg.s3.endpoint_url.clone();
            let s3 = store.clone();
            runner
                .run("health", || async move {
                    let health = match &endpoint {
                        Some(e) => minio_health(e).await,
                        None => None,
                    };
                    s3.head_bucket().await?;
                    Ok(match health {
                        Some(h) => format!("{h}; HeadBucket ok"),
                        None => "HeadBucket ok (no MinIO health endpoint)".into(),
                    })
                })
                .await;
            let s3 = store.clone();
            runner
                    .run("conditional create", || async move {
                        Ok(if s3.probe().await? {
                            if s3.conditional_complete() == Some(true) {
                                "If-None-Match: * honoured on PutObject and CompleteMultipartUpload".into()
                            } else {
                                "If-None-Match: * honoured on PutObject (not on CompleteMultipartUpload)".into()
                            }
                        } else {
                            "not honoured: HEAD-then-PUT fallback in use".into()
                        })
                    })
                    .await;
            ("s3", target, Some(info), store as _)
        }
    };
    if cfg.backend == Backend::Fs {
        runner
            .run("health", || async {
                Ok(format!("data directory {} opened", cfg.data_dir.display()))
            })
            .await;
    }

    let mut written: Vec<Digest> = Vec::new();
    let small = unique_bytes(1 << 20);
    let small_digest = Digest::of(&small);
    let s = &*store;
    runner
        .run("round trip", || async {
            let out = s.put(chunked(&small), Some(small_digest)).await?;
            written.push(out.digest);
            let back = read_all(s, &small_digest, None).await?;
            anyhow::ensure!(
                Digest::of(&back) == small_digest,
                "read back {} bytes with a different digest",
                back.len()
            );
            Ok(format!("wrote and read back 1 MiB, {small_digest}"))
        })
        .await;
    runner
        .run("ranged read", || async {
            let back = read_all(s, &small_digest, Some(1000..5096)).await?;
            anyhow::ensure!(back == small[1000..5096], "bytes 1000-5095 differ");
            let last = read_all(
                s,
                &small_digest,
                Some(small.len() as u64 - 1..small.len() as u64),
            )
            .await?;
            anyhow::ensure!(last == small[small.len() - 1..], "last byte differs");
            Ok("bytes 1000-5095 and the last byte match".into())
        })
        .await;
    let part = cfg.s3.part_size as usize;
    let large_len = if cfg.backend == Backend::S3 {
        part * 2 + 4099
    } else {
        8 << 20
    };
    runner
        .run("multipart", || async {
            let large = unique_bytes(large_len);
            let d = Digest::of(&large);
            let out = s.put(chunked(&large), Some(d)).await?;
            written.push(out.digest);
            let back = read_all(s, &d, None).await?;
            anyhow::ensure!(
                Digest::of(&back) == d,
                "multipart object reads back with a different digest"
            );
            let undeclared = unique_bytes(large_len);
            let out = s.put(chunked(&undeclared), None).await?;
            written.push(out.digest);
            anyhow::ensure!(
                out.digest == Digest::of(&undeclared),
                "staged upload got the wrong digest"
            );
            Ok(if cfg.backend == Backend::S3 {
                format!(
                    "{} bytes in 3 parts of {} (direct) and staged + copied",
                    large_len, part
                )
            } else {
                format!("{large_len} bytes streamed (fs writes whole files)")
            })
        })
        .await;
    // Cleanup runs even after a failure: verify must leave nothing behind.
    runner.failed = false;
    runner
        .run("delete and cleanup", || async {
            for d in &written {
                s.delete(d).await?;
                anyhow::ensure!(s.head(d).await?.is_none(), "{d} still present after delete");
            }
            Ok(format!("deleted the {} test objects", written.len()))
        })
        .await;
    let ok = runner.checks.iter().all(|c| c.status == "pass");
    let report = Report {
        backend,
        target,
        credentials,
        checks: runner.checks,
        ok,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("backend      {}", report.backend);
        println!("target       {}", report.target);
        if let Some(c) = &report.credentials {
            println!("credentials  {}", c.describe());
            println!(
                "expires      {}",
                c.expires
                    .as_deref()
                    .unwrap_or("never (long-lived static credentials)")
            );
        }
        for c in &report.checks {
            println!(
                "{:<5} {:<20} {:>6} ms  {}",
                c.status.to_uppercase(),
                c.name,
                c.millis,
                c.detail
            );
        }
        println!(
            "{}",
            if ok {
                "all checks passed"
            } else {
                "VERIFY FAILED"
            }
        );
    }
    Ok(if ok { 0 } else { exit::FAILURE })
}
