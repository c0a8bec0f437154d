//! Measurements for bench/vend.sh.
//!
//!   vend_bench decide CONFIG TOKEN_FILE SECONDS   token checks + decisions per second
//!   vend_bench http URL TOKEN_FILE N              sequential POST /v1/credentials: p50/p99
//!   vend_bench flood URL TOKEN_FILE N CONNECTIONS
//!                                                 N paced POST /v1/credentials alone,
//!                                                 then N more while CONNECTIONS send
//!                                                 refused tokens from 127.0.0.2-9
//!   vend_bench garage ADMIN_URL TOKEN_FILE BUCKET N
//!                                                 the same number of Garage CreateKey +
//!                                                 AllowBucketKey calls, made directly
//!
//! Prints one JSON line per run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use artifactstore_model::secret::Secret;
use artifactstore_vend::service::{Format, VendRequest};
use serde_json::{Value, json};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn latency_summary(mut ms: Vec<f64>, total: Duration) -> Value {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({
        "n": ms.len(),
        "per_second": ms.len() as f64 / total.as_secs_f64(),
        "p50_ms": percentile(&ms, 0.5),
        "p99_ms": percentile(&ms, 0.99),
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("decide") => decide(&args[2], &read(&args[3]), args[4].parse().unwrap()).await,
        Some("http") => http(&args[2], &read(&args[3]), args[4].parse().unwrap()).await,
        Some("flood") => {
            flood(
                &args[2],
                &read(&args[3]),
                args[4].parse().unwrap(),
                args[5].parse().unwrap(),
            )
            .await
        }
        Some("garage") => {
            garage(
                &args[2],
                &read(&args[3]),
                &args[4],
                args[5].parse().unwrap(),
            )
            .await
        }
        _ => panic!("usage: see the module documentation"),
    }
}

async fn decide(config: &str, token: &str, seconds: u64) {
    let config = artifactstore_vend::VendConfig::load(std::path::Path::new(config)).unwrap();
    let (service, _) = artifactstore_vend::build(config).await.unwrap();
    service.verifier.refresh_all(Duration::ZERO).await;
    assert!(
        service.verifier.issuers.iter().all(|i| i.loaded()),
        "keys not loaded"
    );
    let request = || VendRequest {
        token: Secret::new(token),
        role: None,
        duration_secs: None,
        policy: None,
        client: None,
        format: Format::Json,
    };
    service
        .evaluate(&request())
        .await
        .expect("the token must be allowed");
    let half = Duration::from_secs_f64(seconds as f64 / 2.0);
    // Phase 1: token checks alone; phase 2: token check + role decision (what every
    // request pays before audit and mint). Two tasks on two worker threads each.
    let mut rates = Vec::new();
    for full in [false, true] {
        let started = Instant::now();
        let deadline = started + half;
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let service = Arc::clone(&service);
            let token = token.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if full {
                        let r = VendRequest {
                            token: Secret::new(token.clone()),
                            role: None,
                            duration_secs: None,
                            policy: None,
                            client: None,
                            format: Format::Json,
                        };
                        service.evaluate(&r).await.unwrap();
                    } else {
                        service.verifier.verify(&token).await.unwrap();
                    }
                    n += 1;
                }
                n
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        rates.push(n as f64 / started.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({
            "mode": "decide",
            "token_checks_per_second": rates[0],
            "decisions_per_second": rates[1],
        })
    );
}

/// One `POST /v1/credentials` that must succeed; its round trip in milliseconds.
async fn vend_once(client: &reqwest::Client, endpoint: &str, token: &str) -> f64 {
    let t = Instant::now();
    let r = client
        .post(endpoint)
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    r.bytes().await.unwrap();
    t.elapsed().as_secs_f64() * 1000.0
}

async fn http(url: &str, token: &str, n: usize) {
    let client = reqwest::Client::new();
    let endpoint = format!("{}/v1/credentials", url.trim_end_matches('/'));
    let mut ms = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        ms.push(vend_once(&client, &endpoint, token).await);
    }
    let mut out = latency_summary(ms, started.elapsed());
    out["mode"] = json!("http");
    println!("{out}");
}

/// One vend every `PACE`, so that the legitimate client stays within the default
/// per-client rate (50 per second) and measures latency, not its own throttling.
const PACE: Duration = Duration::from_millis(40);

async fn paced_vends(client: &reqwest::Client, endpoint: &str, token: &str, n: usize) -> Value {
    let mut ms = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let took = vend_once(client, endpoint, token).await;
        ms.push(took);
        tokio::time::sleep(PACE.saturating_sub(Duration::from_secs_f64(took / 1000.0))).await;
    }
    latency_summary(ms, started.elapsed())
}

async fn flood(url: &str, token: &str, n: usize, connections: usize) {
    let base = url.trim_end_matches('/').to_owned();
    let endpoint = format!("{base}/v1/credentials");
    let client = reqwest::Client::new();
    let alone = paced_vends(&client, &endpoint, token, n).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flooders = Vec::new();
    for c in 0..connections {
        let source = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + (c % 8) as u8));
        let one = reqwest::Client::builder()
            .local_address(source)
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (endpoint, stop) = (endpoint.clone(), stop.clone());
        flooders.push(tokio::spawn(async move {
            let (mut sent, mut limited) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = one
                    .post(&endpoint)
                    .bearer_auth(format!("not.a.token{sent}"))
                    .send()
                    .await
                    .unwrap();
                limited += u64::from(r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS);
                r.bytes().await.unwrap();
                sent += 1;
            }
            (sent, limited)
        }));
    }
    let flood_started = Instant::now();
    // Let the flood use up its bursts first: the steady state is what is measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = paced_vends(&client, &endpoint, token, n).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut limited) = (0, 0);
    for f in flooders {
        let (s, l) = f.await.unwrap();
        sent += s;
        limited += l;
    }
    let elapsed = flood_started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "mode": "flood",
            "connections": connections,
            "alone": alone,
            "during": during,
            "flood_requests": sent,
            "flood_rate_limited": limited,
            "flood_per_second": sent as f64 / elapsed,
            "p50_ratio": during["p50_ms"].as_f64().unwrap() / alone["p50_ms"].as_f64().unwrap(),
            "p99_ratio": during["p99_ms"].as_f64().unwrap() / alone["p99_ms"].as_f64().unwrap(),
        })
    );
}

async fn garage(admin_url: &str, admin_token: &str, bucket: &str, n: usize) {
    let client = reqwest::Client::new();
    let base = admin_url.trim_end_matches('/');
    let info: Value = client
        .get(format!("{base}/v2/GetBucketInfo?globalAlias={bucket}"))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bucket_id = info["id"].as_str().unwrap().to_owned();
    let mut ms = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let key: Value = client
            .post(format!("{base}/v2/CreateKey"))
            .bearer_auth(admin_token)
            .json(
                &json!({"name": format!("bench-direct-{i}"), "expiration": "2099-01-01T00:00:00Z"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = key["accessKeyId"].as_str().unwrap().to_owned();
        let r = client
            .post(format!("{base}/v2/AllowBucketKey"))
            .bearer_auth(admin_token)
            .json(&json!({"bucketId": bucket_id, "accessKeyId": id,
                          "permissions": {"read": true, "write": true, "owner": false}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ids.push(id);
    }
    let total = started.elapsed();
    for id in ids {
        let _ = client
            .post(format!("{base}/v2/DeleteKey?id={id}"))
            .bearer_auth(admin_token)
            .send()
            .await;
    }
    let mut out = latency_summary(ms, total);
    out["mode"] = json!("garage");
    println!("{out}");
}
