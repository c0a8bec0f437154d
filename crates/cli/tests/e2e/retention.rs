//! Retention on the real binary: `[[retention]]` rules expire what they say when asked
//! (`gc --expire`), with `version.expired` events naming the rule, `latest` and the
//! protected versions stay, the expired versions' bytes are freed in the same run, and
//! a producer's expiry is capped by its rule. (Ageing with an injected clock is shown in
//! the server crate's retention tests.)

use serde_json::Value;

use crate::common::*;

const RULES: &str = r#"
[[retention]]
name = "ci-builds"
namespaces = ["ci"]
keep_last = 2
keep_per_label = "branch"
max_expires_days = 7
"#;

fn json_of(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn rules_expire_what_they_say_and_free_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, RULES).unwrap();
    let s = Server::start_with_env(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[
            ("ARTIFACTSTORE_GC_GRACE_SECS", "0"),
            ("ARTIFACTSTORE_GC_INTERVAL_SECS", "0"),
            ("ARTIFACTSTORE_RETENTION_INTERVAL_SECS", "0"),
        ],
    );
    // 1 main, 2 dev, 3 main, 4 feature, 5 dev (latest). Kept: 5 (latest), 4 and 5
    // (keep_last = 2), 3 (newest main), 4 (newest feature), 5 (newest dev).
    let branches = ["main", "dev", "main", "feature", "dev"];
    let mut sizes = Vec::new();
    for (i, branch) in branches.iter().enumerate() {
        let v = i + 1;
        let file = dir.path().join(format!("report-{v}.bin"));
        let data = bytes(10_000 + v * 1000, v as u64 + 100);
        sizes.push(data.len() as u64);
        std::fs::write(&file, &data).unwrap();
        let target = format!("ci/app@{v}");
        let label = format!("branch={branch}");
        let o = s.cli(&[
            "put",
            &target,
            file.to_str().unwrap(),
            "--as",
            "report.bin",
            "--complete",
            "--label",
            &label,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let dry = json_of(&s.cli(&["--json", "gc", "--expire", "--dry-run"]));
    assert_eq!(dry["expired_versions"], 2, "{dry}");
    let o = s.cli(&["--json", "ls", "ci/app"]);
    assert!(stdout(&o).contains("\"1\""), "a dry run expires nothing");

    let run = json_of(&s.cli(&["--json", "gc", "--expire"]));
    assert_eq!(run["expired_versions"], 2, "{run}");
    assert_eq!(
        run["collected_blobs"], 2,
        "their files' blobs are freed at once (grace 0)"
    );
    assert_eq!(run["freed_bytes"], sizes[0] + sizes[1]);
    for v in ["1", "2"] {
        let o = s.cli(&["get", &format!("ci/app@{v}/report.bin"), "-o", "/dev/null"]);
        assert!(!o.status.success(), "version {v} is gone");
    }
    for v in ["3", "4", "5"] {
        let out = dir.path().join(format!("got-{v}"));
        let o = s.cli(&[
            "get",
            &format!("ci/app@{v}/report.bin"),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "version {v} stays: {}", stderr(&o));
    }
    let latest = dir.path().join("latest");
    let o = s.cli(&[
        "get",
        "ci/app@latest/report.bin",
        "-o",
        latest.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&latest).unwrap().len() as u64, sizes[4]);

    let events: Vec<Value> = stdout(&s.cli(&["--json", "events"]))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let text = serde_json::to_string(&events).unwrap();
    let expired: Vec<&Value> = events
        .iter()
        .flat_map(|e| match e.get("events") {
            Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
            _ => vec![e],
        })
        .filter(|e| e["type"] == "version.expired")
        .collect();
    assert_eq!(expired.len(), 2, "{text}");
    for e in &expired {
        assert_eq!(e["reason"], "retention rule ci-builds: keep_last", "{e}");
    }
    assert_eq!(
        json_of(&s.cli(&["--json", "gc", "--expire"]))["expired_versions"],
        0
    );

    // A producer's expiry, capped by the rule's max_expires_days (7).
    let file = dir.path().join("x.bin");
    std::fs::write(&file, b"x").unwrap();
    let o = s.cli(&["put", "ci/app@6", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = json_of(&s.cli(&["--json", "complete", "ci/app@6", "--expires-in-days", "30"]));
    let expires = m["expires_at"].as_str().expect("expires_at is shown");
    let completed = m["completed_at"].as_str().unwrap();
    let days = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    assert_eq!((days(expires) - days(completed)) / 86_400, 7, "{m}");
    let o = s.cli(&["complete", "ci/app@7", "--expires-in-days", "0"]);
    assert!(!o.status.success(), "0 days is refused");
}
