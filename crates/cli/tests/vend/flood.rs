//! A flood against the real `vend serve`: 32 connections of refused tokens while a
//! legitimate client keeps getting credentials from the sts driver at moto, and the
//! audit log grows by coalesced lines only; then one subject asking faster than its
//! bucket refills is refused 429 `rate_limited` past its burst.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::live::{bootstrap_moto, moto_sts_env, setup, start_moto};
use crate::common::block_on;
use crate::helpers::*;

/// Flooding addresses (all of 127.0.0.0/8 is loopback on Linux) and connections.
const FLOOD_ADDRESSES: u8 = 8;
const CONNECTIONS: usize = 32;
/// How long the flood lasts at most, and how many requests each connection sends at
/// most: bounded either way.
const FLOOD_FOR: Duration = Duration::from_secs(4);
const PER_CONNECTION_MAX: u64 = 5_000;
/// The audit window of the test's service.
const WINDOW_SECS: u64 = 1;
/// Its burst per subject (the default rate, 5 a second, refills it).
const SUBJECT_BURST: u64 = 10;

/// The lines that coalesce refusals (those with a `count`), and their counts' sum.
fn coalesced(lines: &[Value]) -> (u64, u64) {
    let ours: Vec<&Value> = lines.iter().filter(|l| l["count"].is_u64()).collect();
    (
        ours.len() as u64,
        ours.iter().map(|l| l["count"].as_u64().unwrap()).sum(),
    )
}

#[test]
fn a_flood_of_refused_tokens_leaves_vending_working_and_the_audit_log_small() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let Some(moto) = start_moto() else { return };
    let boot = bootstrap_moto(&moto);
    let dir = tempfile::tempdir().unwrap();
    let ak = dir.path().join("ak");
    let sk = dir.path().join("sk");
    std::fs::write(&ak, boot["access_key_id"].as_str().unwrap()).unwrap();
    std::fs::write(&sk, boot["secret_access_key"].as_str().unwrap()).unwrap();
    let env = moto_sts_env(&moto, &boot, &ak, &sk);
    let extra = format!(
        "\n[rate_limits]\naudit_window_secs = {WINDOW_SECS}\nper_subject_burst = {SUBJECT_BURST}\n"
    );
    let vend = Vend::start(&issuer, None, setup("examples/vend-sts.toml", &extra, &env));
    let token = issuer.token(writer_claims("repo:acme/flood-victim"));
    let lines_before = vend.audit_lines().len();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let flood_answers = Arc::new(AtomicU64::new(0));
    let url = vend.url.clone();
    let (issued, flood_elapsed) = block_on({
        let stop = stop.clone();
        let flood_answers = flood_answers.clone();
        async move {
            let mut flood = Vec::new();
            for c in 0..CONNECTIONS {
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (c as u8 % FLOOD_ADDRESSES)));
                // One connection each: a client of its own, a pool of one.
                let client = reqwest::Client::builder()
                    .local_address(source)
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let url = url.clone();
                let stop = stop.clone();
                let answers = flood_answers.clone();
                flood.push(tokio::spawn(async move {
                    for i in 0..PER_CONNECTION_MAX {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let r = if i % 2 == 0 {
                            client
                                .post(format!("{url}/v1/credentials"))
                                .bearer_auth(format!("not.a.token{i}"))
                                .send()
                                .await
                        } else {
                            client
                                .post(format!("{url}/"))
                                .form(&[
                                    ("Action", "AssumeRoleWithWebIdentity"),
                                    ("Version", "2011-06-15"),
                                    ("WebIdentityToken", "eyJhbGciOiJub25lIn0.e30."),
                                ])
                                .send()
                                .await
                        };
                        let r = r.expect("the service answers every flood request");
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        assert!(
                            status == 400 || status == 429,
                            "a refused token is answered 400 or 429, not {status}"
                        );
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            // The legitimate client, from 127.0.0.1, while the flood runs.
            let legit = reqwest::Client::new();
            let mut issued = 0u64;
            let deadline = Instant::now() + FLOOD_FOR;
            while Instant::now() < deadline && issued < 12 {
                let r = legit
                    .post(format!("{url}/v1/credentials"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 200, "the legitimate client is served: {body}");
                assert!(
                    body["access_key_id"]
                        .as_str()
                        .is_some_and(|k| !k.is_empty())
                );
                issued += 1;
                // Four a second: within the subject's rate.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
            stop.store(true, Ordering::Relaxed);
            for task in flood {
                task.await.unwrap();
            }
            (issued, started.elapsed())
        }
    });
    let refused = flood_answers.load(Ordering::Relaxed);
    assert!(issued >= 3, "only {issued} vends during the flood");

    // Every refusal is counted once its window has closed (within a second of it).
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = vend.audit_lines()[lines_before..].to_vec();
        if coalesced(&lines).1 >= refused || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (coalesced_lines, counted) = coalesced(&lines);
    eprintln!(
        "flood: {refused} refused requests in {flood_elapsed:?} from {FLOOD_ADDRESSES} addresses, \
         {coalesced_lines} coalesced audit lines, {issued} credentials issued meanwhile"
    );
    assert_eq!(
        counted, refused,
        "the counts add up to every refused request"
    );
    // Two lines per window and flooding address, and the windows the flood spans.
    let windows = flood_elapsed.as_secs() / WINDOW_SECS + 2;
    let bound = 2 * u64::from(FLOOD_ADDRESSES) * windows;
    assert!(
        coalesced_lines <= bound,
        "{coalesced_lines} coalesced lines for {refused} refusals (bound {bound})"
    );
    assert!(
        refused > 3 * bound,
        "the flood was too small to tell ({refused} requests)"
    );
    // Besides them, only the legitimate client's decision and issue lines.
    let other = lines.len() as u64 - coalesced_lines;
    assert_eq!(other, 2 * issued, "{:?}", &lines[..lines.len().min(5)]);
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 200, "{text}");

    // One subject asking faster than its bucket refills is refused past its burst,
    // whatever address it comes from, with a Retry-After.
    let greedy = issuer.token(writer_claims("repo:acme/greedy"));
    let url = vend.url.clone();
    let answers: Vec<(u16, String, Option<String>)> = block_on(async move {
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        for _ in 0..SUBJECT_BURST * 3 {
            let r = client
                .post(format!("{url}/v1/credentials"))
                .bearer_auth(&greedy)
                .send()
                .await
                .unwrap();
            let reason = r
                .headers()
                .get("x-artifactstore-reason")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            answers.push((r.status().as_u16(), reason, retry_after));
        }
        answers
    });
    let served = answers.iter().filter(|a| a.0 == 200).count() as u64;
    assert!(served >= SUBJECT_BURST, "{answers:?}");
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(
        limited
            .iter()
            .all(|a| a.1 == "rate_limited" && a.2.is_some()),
        "{answers:?}"
    );
}
