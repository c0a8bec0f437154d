//! `artifactstore storage compat`: the feature matrix of one S3 endpoint. Against the
//! in-process s3s-fs store always; with `ARTIFACTSTORE_TEST_BACKEND=s3` also against the
//! live store of `scripts/s3-fixture.sh`, where rows that differ between Garage and Ceph
//! RGW are asserted store by store.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::s3s::InProcessS3;
use crate::common::*;

fn compat(envs: &[(&str, String)], args: &[&str]) -> Output {
    compat_command(envs, args).output().unwrap()
}

/// `storage compat` with only the settings given: not those of a live store or a vend
/// service the suite may run beside (an STS endpoint, another credentials source).
fn compat_command(envs: &[(&str, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["storage", "compat"]).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ARTIFACTSTORE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "static");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// The settings of the in-process store at `endpoint`.
fn in_process_env(s3: &InProcessS3, endpoint: String) -> Vec<(&'static str, String)> {
    vec![
        ("ARTIFACTSTORE_BACKEND", "s3".to_owned()),
        ("ARTIFACTSTORE_S3_ENDPOINT_URL", endpoint),
        ("ARTIFACTSTORE_S3_BUCKET", s3.bucket.clone()),
        ("COMPAT_KEY", s3.key_id.clone()),
        ("COMPAT_SECRET", s3.secret.clone()),
        (
            "ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF",
            "env:COMPAT_KEY".to_owned(),
        ),
        (
            "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF",
            "env:COMPAT_SECRET".to_owned(),
        ),
    ]
}

/// Each row's id and status, from `--json`.
fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (s("id"), s("status"))
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn compat_probes_an_in_process_store_and_leaves_nothing_behind() {
    let s3 = InProcessS3::start("compat", "compat-e2e").await;
    let mut envs = in_process_env(&s3, s3.endpoint());
    envs.push(("ARTIFACTSTORE_S3_PREFIX", "tenant/".to_owned()));
    let run = |args: &'static [&'static str]| {
        let envs = envs.clone();
        tokio::task::spawn_blocking(move || compat(&envs, args))
    };
    let out = run(&["--json"]).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = statuses(&report);
    assert_eq!(rows.len(), 35, "one row per probed feature: {rows:?}");
    // What s3s-fs 0.14.1 does, and what it does not.
    for (id, want) in [
        ("path-style", "pass"),
        ("list-v2-pagination", "pass"),
        ("list-v2-delimiter", "pass"),
        ("range-first-byte", "pass"),
        ("range-last-byte", "pass"),
        ("range-suffix", "pass"),
        ("range-unsatisfiable", "pass"),
        ("multipart-upload", "pass"),
        ("multipart-min-part-size", "pass"),
        ("put-if-none-match", "pass"),
        ("put-checksum-crc32", "pass"),
        ("presigned-get", "pass"),
        ("presigned-put", "pass"),
        ("copy-object", "pass"),
        ("upload-part-copy", "pass"),
        // It cannot list uploads (501), ignores session tokens and If-Match.
        ("multipart-list-uploads", "unsupported"),
        ("bogus-session-token", "unsupported"),
        ("get-if-match-quoted", "unsupported"),
        // An IP endpoint and no --virtual-host-domain; no STS endpoint.
        ("virtual-host", "skipped"),
        ("sts-assume-role", "skipped"),
        ("session-token-enforced", "skipped"),
    ] {
        assert_eq!(rows[id], want, "{id}: {}", stdout(&out));
    }
    let evidence = |id: &str| -> String {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["evidence"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        evidence("multipart-list-uploads"),
        "HTTP 501 NotImplemented"
    );
    assert!(
        evidence("presigned-get").contains("tampered 403"),
        "{}",
        evidence("presigned-get")
    );

    // Everything it wrote was under its scratch prefix, inside the configured prefix, and
    // is gone: counted in the store's own directory.
    let scratch = report["scratch_prefix"].as_str().unwrap();
    assert!(scratch.starts_with("tenant/compat-"), "{scratch}");
    assert_eq!(report["cleanup"]["problems"], serde_json::json!([]));
    assert!(report["cleanup"]["objects_deleted"].as_u64().unwrap() >= 20);
    let left: Vec<_> = files_under(&s3.root.path().join("compat"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".s3s"))
        .collect();
    assert!(left.is_empty(), "compat left {left:?}");

    // The secret, and the wrong secret the error-code probe signs with, are never shown.
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(&s3.secret), "the secret leaked:\n{text}");
    }

    // Markdown: a table without timings, one line per row.
    let md = run(&["--markdown"]).await.unwrap();
    assert_eq!(md.status.code(), Some(0), "{}", stderr(&md));
    let text = stdout(&md);
    assert!(
        text.starts_with("| group | feature | id | result | evidence |\n|---|"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2 + 35, "{text}");
    assert!(
        text.contains("| `put-if-none-match` | pass | HTTP 412 PreconditionFailed |"),
        "{text}"
    );
    assert!(!text.contains(" ms"), "{text}");
}

/// SIGINT while a probe waits on the store: the probes stop, what was written is removed,
/// and the exit code says so. (Killed without the handler, the objects stay.)
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_compat_removes_what_it_wrote() {
    use super::fault_proxy::{FaultProxy, Mode};
    let s3 = InProcessS3::start("compat", "compat-interrupted").await;
    let proxy = FaultProxy::start(s3.addr).await;
    let mut cmd = compat_command(&in_process_env(&s3, proxy.url()), &["--json"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let bucket_dir = s3.root.path().join("compat");
    let written = || {
        files_under(&bucket_dir)
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains(".s3s"))
            .count()
    };
    // Once the first objects are there, the store stops answering: the run hangs on it.
    assert!(
        eventually(30, || written() > 0).await,
        "compat wrote nothing"
    );
    proxy.set(Mode::Stall).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(written() > 0);
    // SIGINT, then the store answers again for the cleanup.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    proxy.set(Mode::Pass).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["interrupted"], true);
    assert!(report["rows"].as_array().unwrap().len() < 35);
    assert_eq!(written(), 0, "left {:?}", files_under(&bucket_dir));
}

#[test]
fn compat_refuses_the_fs_backend_and_names_an_unreachable_endpoint() {
    let out = compat(&[], &["--backend", "fs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--backend s3"), "{}", stderr(&out));

    let secret = "compat-canary-secret-0f3a9c";
    let out = compat(
        &[
            ("ARTIFACTSTORE_S3_ENDPOINT_URL", "http://127.0.0.1:1".into()),
            ("ARTIFACTSTORE_S3_BUCKET", "b".into()),
            ("COMPAT_SECRET", secret.into()),
            ("ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF", "env:HOME".into()),
            (
                "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF",
                "env:COMPAT_SECRET".into(),
            ),
        ],
        &["--backend", "s3"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("HeadBucket"), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(secret) && !stdout(&out).contains(secret));
}

/// The live store: what differs between the stores CI runs is asserted per store.
#[test]
fn compat_on_the_live_store() {
    if !on_s3() {
        return;
    }
    let fixture = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut args = vec!["--json".to_owned()];
    for (flag, var) in [
        (
            "--virtual-host-domain",
            "ARTIFACTSTORE_FIXTURE_VIRTUAL_HOST_DOMAIN",
        ),
        ("--sts-endpoint", "ARTIFACTSTORE_FIXTURE_STS_URL"),
        ("--role-arn", "ARTIFACTSTORE_FIXTURE_ROLE_ARN"),
    ] {
        if let Some(v) = fixture(var) {
            args.extend([flag.to_owned(), v]);
        }
    }
    // The suite's credentials as configured (static keys, or web identity at vend).
    let mut cmd = Command::new(BIN);
    cmd.args(["storage", "compat", "--backend", "s3"])
        .args(&args);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = statuses(&report);
    assert_eq!(
        report["cleanup"]["problems"],
        serde_json::json!([]),
        "{}",
        stdout(&out)
    );
    for id in [
        "path-style",
        "list-v2-pagination",
        "list-v2-delimiter",
        "range-first-byte",
        "range-suffix",
        "range-unsatisfiable",
        "multipart-upload",
        "multipart-abort",
        "presigned-get",
        "presigned-put",
        "copy-object",
        "upload-part-copy",
    ] {
        assert_eq!(rows[id], "pass", "{id}: {}", stdout(&out));
    }
    let server = fixture("ARTIFACTSTORE_FIXTURE_SERVER").unwrap_or_default();
    let expect: &[(&str, &[&str])] = match server.as_str() {
        // Garage: no conditional create, session tokens ignored, no STS.
        "garage" => &[
            ("put-if-none-match", &["unsupported"]),
            ("bogus-session-token", &["unsupported", "skipped"]),
            ("virtual-host", &["pass"]),
            ("multipart-completion-etag", &["pass"]),
        ],
        // Ceph RGW: conditional create on PUT, tokens enforced, a real STS without
        // GetCallerIdentity, an empty completion ETag.
        "ceph" => &[
            ("put-if-none-match", &["pass"]),
            ("complete-if-none-match", &["unsupported"]),
            ("bogus-session-token", &["pass", "skipped"]),
            ("session-token-enforced", &["pass"]),
            ("virtual-host", &["pass"]),
            ("multipart-completion-etag", &["fail"]),
            ("sts-assume-role", &["pass"]),
            ("sts-assume-role-with-web-identity", &["pass"]),
            ("sts-get-caller-identity", &["unsupported"]),
            ("error-codes-distinct", &["unsupported"]),
        ],
        _ => &[],
    };
    for (id, allowed) in expect {
        assert!(
            allowed.contains(&rows[*id].as_str()),
            "{server} {id}: {} not in {allowed:?}\n{}",
            rows[*id],
            stdout(&out)
        );
    }
}
