//! Rotation under load: `artifactstore serve --backend s3` on web-identity credentials
//! from the vend service (Garage driver) with 6-second leases, renewed about once a
//! second, while eight clients upload and download without pause — small files and
//! multipart ones — until at least 100 rotations have happened. Not one request may
//! fail, and every upload must read back with its digest.
//!
//! `bench/rotation.sh` runs the same test with the load also measured on the fixture's
//! static Garage keys, before and after the rotating phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use artifactstore_model::Hasher;
use serde_json::{Value, json};

use super::{Serve, rotating_vend, token_for, web_identity};
use crate::helpers::*;
use crate::live::write_token;

const CLIENTS: usize = 8;
/// Leases of 6 s renewed when less than 5 s remain: the cache caps the window at three
/// quarters of the lifetime (4.5 s) and adds up to a fifth of it as jitter, so a
/// credential is replaced 0.6–1.5 s after it was issued — about one rotation a
/// second, 100 in about two minutes.
const LEASE_SECS: &str = "6";
const WINDOW_SECS: &str = "5";
/// The test server's multipart part size (`Serve` sets it).
const PART: usize = 5 << 20;
/// File sizes the clients cycle through: mostly small files, one in eight above one
/// part (two- and three-part uploads). About 1 MiB per upload on average: a run
/// stores a few GiB in the fixture's bucket.
const SIZES: &[usize] = &[
    1 << 10,
    700,
    16 << 10,
    200 << 10,
    1 << 10,
    1 << 20,
    PART + 123_457,
    4 << 10,
    64 << 10,
    8 << 10,
    300 << 10,
    2 << 10,
    100,
    32 << 10,
    2 * PART + 7,
    512 << 10,
];
/// How often the monitor reads the server's refresh counter: a rotation is placed
/// within this much of when it happened.
const POLL: Duration = Duration::from_millis(100);

/// One request as a client saw it.
struct Sample {
    start: Instant,
    end: Instant,
    ok: bool,
    /// At most 1 MiB moved: the latency of these says more about a rotation than
    /// that of multipart files, which overlap one more often just by lasting longer.
    small: bool,
}

/// What one load run measured.
struct Outcome {
    samples: Vec<Sample>,
    errors: Vec<String>,
    /// Intervals of the monitor's polls in which the refresh counter went up.
    rotation_windows: Vec<(Instant, Instant)>,
    rotations: u64,
    uploads: u64,
    /// Uploads of more than one part.
    multipart: u64,
    verified: u64,
    bytes: u64,
    elapsed: Duration,
}

enum Until {
    /// Until the server's refresh counter has gone up this many times.
    Rotations(u64, Duration),
    For(Duration),
}

fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Distinct bytes for each (client, request): a unique header, then a slice of a
/// shared pseudo-random pool, so that no upload is deduplicated by its digest.
fn payload(pool: &[u8], client: usize, n: u64, size: usize) -> Vec<u8> {
    let header = format!("client {client} request {n}\n").into_bytes();
    let mut out = Vec::with_capacity(size.max(header.len()));
    out.extend_from_slice(&header);
    let offset = (n as usize * 7919 + client * 104_729) % (pool.len() - size);
    out.extend_from_slice(&pool[offset..offset + size.saturating_sub(header.len())]);
    out
}

fn pool() -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..(3 * PART + (1 << 20)))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn digest_of(bytes: Vec<u8>) -> (Vec<u8>, String) {
    let mut h = Hasher::new();
    h.update(&bytes);
    let d = h.finish().to_string();
    (bytes, d)
}

struct ClientReport {
    samples: Vec<Sample>,
    errors: Vec<String>,
    uploads: u64,
    multipart: u64,
    verified: u64,
    bytes: u64,
}

/// One client: PUT a file (every other one with its digest declared, so both the
/// direct multipart path and the staged path run), GET it back and check its digest,
/// then GET an earlier file of its own and check that one too.
async fn client(
    id: usize,
    base: String,
    run: String,
    pool: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> ClientReport {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut r = ClientReport {
        samples: Vec::new(),
        errors: Vec::new(),
        uploads: 0,
        multipart: 0,
        verified: 0,
        bytes: 0,
    };
    let mut stored: Vec<(String, String)> = Vec::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let size = SIZES[(n as usize + id * 3) % SIZES.len()];
        let pool_ = pool.clone();
        let (body, digest) =
            tokio::task::spawn_blocking(move || digest_of(payload(&pool_, id, n, size)))
                .await
                .unwrap();
        let url = format!("{base}/v1/artifacts/load/{run}-c{id}/v1/f{n}-{size}.bin");
        let mut put = http.put(&url).body(body);
        if n.is_multiple_of(2) {
            put = put.header("X-Artifact-Digest", &digest);
        }
        let start = Instant::now();
        let answer = put.send().await;
        let ok = match answer {
            Ok(a) if a.status().as_u16() == 201 => {
                // The answer is read in full before the clock stops.
                a.bytes().await.is_ok()
            }
            Ok(a) => {
                let status = a.status();
                let text = a.text().await.unwrap_or_default();
                r.errors.push(format!("PUT {url}: {status} {text}"));
                false
            }
            Err(e) => {
                r.errors.push(format!("PUT {url}: {e}"));
                false
            }
        };
        r.samples.push(Sample {
            start,
            end: Instant::now(),
            ok,
            small: size <= 1 << 20,
        });
        if ok {
            r.uploads += 1;
            r.multipart += u64::from(size > PART);
            r.bytes += size as u64;
            stored.push((url.clone(), digest.clone()));
        }
        let mut reads = vec![];
        if ok {
            reads.push((url, digest));
        }
        if stored.len() > 1 {
            let earlier = stored[(n as usize * 31) % (stored.len() - 1)].clone();
            reads.push(earlier);
        }
        for (url, digest) in reads {
            let small = url
                .rsplit('-')
                .next()
                .and_then(|s| s.trim_end_matches(".bin").parse::<usize>().ok())
                .is_some_and(|s| s <= 1 << 20);
            let start = Instant::now();
            let got = match http.get(&url).send().await {
                Ok(a) if a.status().as_u16() == 200 => a.bytes().await.map_err(|e| e.to_string()),
                Ok(a) => Err(format!("{}", a.status())),
                Err(e) => Err(e.to_string()),
            };
            let end = Instant::now();
            let ok = match got {
                Ok(bytes) => {
                    let len = bytes.len() as u64;
                    let (_, seen) = tokio::task::spawn_blocking(move || digest_of(bytes.to_vec()))
                        .await
                        .unwrap();
                    if seen == digest {
                        r.verified += 1;
                        r.bytes += len;
                        true
                    } else {
                        r.errors
                            .push(format!("GET {url}: digest {seen}, uploaded {digest}"));
                        false
                    }
                }
                Err(e) => {
                    r.errors.push(format!("GET {url}: {e}"));
                    false
                }
            };
            r.samples.push(Sample {
                start,
                end,
                ok,
                small,
            });
        }
        n += 1;
    }
    r
}

/// Runs the eight clients against `base` until `until`, watching the server's refresh
/// counter.
fn run_load(base: &str, run: &str, until: Until) -> Outcome {
    let base = base.to_owned();
    let run = run.to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let pool = Arc::new(tokio::task::spawn_blocking(pool).await.unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = reqwest::Client::new();
        let read = |m: reqwest::Client, url: String| async move {
            let text = m.get(url).send().await.ok()?.text().await.ok()?;
            Some(metric_in(
                &text,
                "artifactstore_s3_credentials_refreshes_total",
            ))
        };
        let metrics_url = format!("{base}/metrics");
        let before = read(metrics.clone(), metrics_url.clone()).await.unwrap();
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client(
                    id,
                    base.clone(),
                    run.clone(),
                    pool.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let mut windows = Vec::new();
        let mut last = (Instant::now(), before);
        loop {
            tokio::time::sleep(POLL).await;
            let now = Instant::now();
            let Some(count) = read(metrics.clone(), metrics_url.clone()).await else {
                continue;
            };
            if count > last.1 {
                windows.push((last.0, now));
            }
            last = (now, count);
            let done = match until {
                Until::Rotations(n, bound) => {
                    count - before >= n as f64 || started.elapsed() > bound
                }
                Until::For(d) => started.elapsed() >= d,
            };
            if done {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut out = Outcome {
            samples: Vec::new(),
            errors: Vec::new(),
            rotation_windows: windows,
            rotations: 0,
            uploads: 0,
            multipart: 0,
            verified: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
        };
        for c in clients {
            let r = c.await.unwrap();
            out.samples.extend(r.samples);
            out.errors.extend(r.errors);
            out.uploads += r.uploads;
            out.multipart += r.multipart;
            out.verified += r.verified;
            out.bytes += r.bytes;
        }
        out.elapsed = started.elapsed();
        let after = read(metrics, metrics_url).await.unwrap();
        out.rotations = (after - before) as u64;
        out
    })
}

fn percentile(mut ms: Vec<f64>, p: f64) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    ms.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
    ms[rank.clamp(1, ms.len()) - 1]
}

impl Outcome {
    /// The figures: requests, failures, rotations, p50/p99 overall, and p99 of the
    /// requests that were in flight while a rotation happened against the others.
    fn summary(&self) -> Value {
        let ms = |s: &Sample| s.end.duration_since(s.start).as_secs_f64() * 1e3;
        let overlaps = |s: &Sample| {
            self.rotation_windows
                .iter()
                .any(|(a, b)| s.start <= *b && s.end >= *a)
        };
        let all: Vec<f64> = self.samples.iter().map(ms).collect();
        let (around, away): (Vec<&Sample>, Vec<&Sample>) =
            self.samples.iter().partition(|s| overlaps(s));
        let p99_of = |v: &[&Sample], small_only: bool| {
            percentile(
                v.iter()
                    .filter(|s| s.small || !small_only)
                    .map(|s| ms(s))
                    .collect(),
                99.0,
            )
        };
        let secs = self.elapsed.as_secs_f64();
        let r1 = |x: f64| (x * 10.0).round() / 10.0;
        json!({
            "clients": CLIENTS,
            "seconds": r1(secs),
            "rotations": self.rotations,
            "requests": self.samples.len(),
            "failures": self.samples.iter().filter(|s| !s.ok).count(),
            "uploads": self.uploads,
            "multipart_uploads": self.multipart,
            "reads_verified": self.verified,
            "mib": r1(self.bytes as f64 / f64::from(1 << 20)),
            "requests_per_sec": r1(self.samples.len() as f64 / secs),
            "p50_ms": r1(percentile(all.clone(), 50.0)),
            "p99_ms": r1(percentile(all, 99.0)),
            "around_rotation_requests": around.len(),
            "around_rotation_p99_ms": r1(p99_of(&around, false)),
            "away_from_rotation_p99_ms": r1(p99_of(&away, false)),
            "small_around_rotation_p99_ms": r1(p99_of(&around, true)),
            "small_away_from_rotation_p99_ms": r1(p99_of(&away, true)),
        })
    }
}

/// The server on vended credentials that rotate about once a second, for `subject`.
fn rotating_server(g: &Garage, issuer: &Issuer, subject: &str) -> (Vend, Serve) {
    let vend = rotating_vend(issuer, g, None);
    let token_file = write_token(
        vend.dir.path(),
        "t.jwt",
        &token_for(issuer, subject, "rotating"),
    );
    let mut env = web_identity(&vend, &token_file, "rotating");
    env.retain(|(k, _)| *k != "ARTIFACTSTORE_S3_CREDENTIALS_REFRESH_WINDOW_SECS");
    env.push((
        "ARTIFACTSTORE_S3_CREDENTIALS_REFRESH_WINDOW_SECS",
        WINDOW_SECS.into(),
    ));
    env.push((
        "ARTIFACTSTORE_S3_CREDENTIALS_DURATION_SECS",
        LEASE_SECS.into(),
    ));
    let serve = Serve::start(&env);
    assert!(serve.round_trip("warm-up"), "{}", serve.logs());
    (vend, serve)
}

fn write_summary(name: &str, summary: &Value) {
    eprintln!("{name}: {summary}");
    if let Some(path) = std::env::var_os("ARTIFACTSTORE_ROTATION_LOAD_OUT") {
        let mut all: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({}));
        all[name] = summary.clone();
        std::fs::write(&path, all.to_string()).unwrap();
    }
}

#[test]
fn eight_clients_lose_nothing_across_a_hundred_rotations() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    // `bench/rotation.sh` runs this very test with the static-key peer around it
    // (ARTIFACTSTORE_BENCH_STATIC_SECS before and as long after, so that a drift over
    // the run does not pass for the cost of rotation) and more rotations if asked.
    let var = |name: &str| -> Option<u64> { std::env::var(name).ok()?.parse().ok() };
    let want = var("ARTIFACTSTORE_BENCH_ROTATIONS").unwrap_or(100);
    let static_secs = var("ARTIFACTSTORE_BENCH_STATIC_SECS").filter(|s| *s > 0);
    let before = static_secs.map(|secs| static_phase("static_before", secs));

    let (vend, serve) = rotating_server(&g, &issuer, "load");
    let out = run_load(
        &serve.url,
        &format!("ci-{}", now()),
        Until::Rotations(want, Duration::from_secs(want + 70)),
    );
    let mut summary = out.summary();
    summary["forced_refreshes"] =
        json!(serve.metric("artifactstore_s3_credentials_forced_refreshes_total"));
    write_summary("rotation", &summary);

    assert!(
        out.errors.is_empty(),
        "{} failed requests, first ones: {:#?}\n{summary}",
        out.errors.len(),
        &out.errors[..out.errors.len().min(5)]
    );
    assert!(
        out.rotations >= want,
        "only {} rotations in {:?}: {summary}",
        out.rotations,
        out.elapsed
    );
    // Every acknowledged upload was read back at once, with its digest (a read that
    // failed or came back different is among the errors above).
    assert!(out.uploads > 0 && out.verified >= out.uploads, "{summary}");
    // Multipart uploads were among them.
    assert!(out.multipart >= CLIENTS as u64, "{summary}");
    // Each rotation was a lease of its own at the vend service, every one of them
    // a new Garage key.
    let leases: Vec<Value> = vend
        .leases()
        .into_iter()
        .filter(|l| l["subject"] == "load")
        .collect();
    assert!(leases.len() as u64 > out.rotations, "{}", leases.len());
    let mut keys: Vec<&str> = leases
        .iter()
        .map(|l| l["access_key_id"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), leases.len());
    // No refresh failed, and no request was refused upstream and rescued by the
    // forced refresh and retry: the rotation itself was seamless.
    assert_eq!(
        serve.metric("artifactstore_s3_credentials_refresh_failures_total"),
        0.0,
        "{}",
        serve.logs()
    );
    assert_eq!(
        serve.metric("artifactstore_s3_credentials_forced_refreshes_total"),
        0.0,
        "{}",
        serve.logs()
    );

    if let (Some(before), Some(secs)) = (before, static_secs) {
        drop(serve);
        drop(vend);
        let after = static_phase("static_after", secs);
        write_summary("static", &before.merge(after).summary());
    }
}

/// The peer of `bench/rotation.sh`: the same load on the fixture's own static keys
/// (ARTIFACTSTORE_S3_*_REF, nothing expires) for `secs`.
fn static_phase(name: &str, secs: u64) -> Outcome {
    let serve = Serve::start(&[("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "static".into())]);
    assert!(serve.round_trip("warm-up"), "{}", serve.logs());
    let out = run_load(
        &serve.url,
        &format!("bench-{name}-{}", now()),
        Until::For(Duration::from_secs(secs)),
    );
    write_summary(name, &out.summary());
    assert!(out.errors.is_empty(), "{name}: {:?}", &out.errors[..1]);
    out
}

impl Outcome {
    /// Two runs of the same load as one (their requests pooled, their times added).
    fn merge(mut self, other: Outcome) -> Outcome {
        self.samples.extend(other.samples);
        self.errors.extend(other.errors);
        self.rotation_windows.extend(other.rotation_windows);
        self.rotations += other.rotations;
        self.uploads += other.uploads;
        self.multipart += other.multipart;
        self.verified += other.verified;
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
        self
    }
}
