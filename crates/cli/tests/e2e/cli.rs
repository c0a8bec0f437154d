//! End-to-end tests of the client commands and fsck against the real binary.

use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// The stdout of a command that must have succeeded.
pub(crate) fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[test]
fn put_get_ls_complete_rm_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("reports/deep")).unwrap();
    std::fs::write(tree.join("reports/cmis-summary.md"), "# summary\n").unwrap();
    std::fs::write(tree.join("reports/deep/raw.json"), "{\"ok\":true}").unwrap();
    std::fs::write(tree.join("bundle.bin"), bytes(300_000, 7)).unwrap();
    let single = dir.path().join("single.txt");
    std::fs::write(&single, "single file").unwrap();

    let out = ok(&s.cli(&["put", "ci/tck@1", tree.to_str().unwrap()]));
    assert!(out.contains("added reports/cmis-summary.md"), "{out}");
    assert!(out.contains("added reports/deep/raw.json"), "{out}");
    let out = ok(&s.cli(&[
        "put",
        "ci/tck@1",
        single.to_str().unwrap(),
        "--as",
        "extra/notes.txt",
        "--complete",
        "--label",
        "branch=main",
    ]));
    assert!(out.contains("completed ci/tck@1: 4 files"), "{out}");

    // ls at every level, text and JSON.
    assert_eq!(ok(&s.cli(&["ls"])).trim(), "ci");
    assert_eq!(ok(&s.cli(&["ls", "ci"])).trim(), "tck");
    let versions = ok(&s.cli(&["ls", "ci/tck"]));
    assert!(
        versions.starts_with('1') && versions.contains("complete"),
        "{versions}"
    );
    let manifest: Value =
        serde_json::from_str(&ok(&s.cli(&["--json", "ls", "ci/tck@latest"]))).unwrap();
    assert_eq!(manifest["file_count"], 4);
    assert_eq!(manifest["labels"]["branch"], "main");
    let media: Vec<(&str, &str)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap(),
                f["media_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        media.contains(&("reports/deep/raw.json", "application/json")),
        "{media:?}"
    );

    // get to stdout and to a file, through latest.
    assert_eq!(
        ok(&s.cli(&["get", "ci/tck@latest/reports/cmis-summary.md"])),
        "# summary\n"
    );
    let target = dir.path().join("out/bundle.bin");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    ok(&s.cli(&["get", "ci/tck@1/bundle.bin", "-o", target.to_str().unwrap()]));
    assert_eq!(std::fs::read(&target).unwrap(), bytes(300_000, 7));
    assert_eq!(
        std::fs::read_dir(target.parent().unwrap()).unwrap().count(),
        1,
        "no temp file left"
    );

    // Re-putting the same tree is idempotent even on the complete version.
    let out = ok(&s.cli(&["put", "ci/tck@1", tree.to_str().unwrap()]));
    assert!(out.contains("unchanged reports/cmis-summary.md"), "{out}");

    // Exit codes.
    let missing = s.cli(&["get", "ci/tck@1/nope.txt"]);
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("file_not_found"));
    std::fs::write(tree.join("reports/cmis-summary.md"), "# changed\n").unwrap();
    let conflict = s.cli(&[
        "put",
        "ci/tck@1",
        tree.join("reports/cmis-summary.md").to_str().unwrap(),
        "--as",
        "reports/cmis-summary.md",
    ]);
    assert_eq!(conflict.status.code(), Some(4), "{}", stderr(&conflict));
    let usage = s.cli(&["get", "not-a-target"]);
    assert_eq!(usage.status.code(), Some(2));
    let unreachable = Command::new(BIN)
        .args(["--server", "http://127.0.0.1:9", "ls"])
        .output()
        .unwrap();
    assert_eq!(
        unreachable.status.code(),
        Some(6),
        "{}",
        stderr(&unreachable)
    );

    // rm and events.
    ok(&s.cli(&["put", "ci/tck@2", single.to_str().unwrap()]));
    ok(&s.cli(&["rm", "ci/tck@2"]));
    assert_eq!(
        s.cli(&["get", "ci/tck@2/single.txt"]).status.code(),
        Some(3)
    );
    let events = ok(&s.cli(&["--json", "events"]));
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("version.created"));
    assert_eq!(kinds.last().map(String::as_str), Some("version.deleted"));
    assert_eq!(kinds.iter().filter(|k| *k == "file.added").count(), 5);
    let after = ok(&s.cli(&["events", "--after", "7"]));
    assert!(!after.contains("       1 "), "{after}");

    let completions = ok(&Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap());
    assert!(completions.contains("artifactstore"));
}

#[test]
fn events_follow_prints_new_events_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let mut follower = s
        .cli_command()
        .args(["--json", "events", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let f = dir.path().join("f.txt");
    std::fs::write(&f, "x").unwrap();
    ok(&s.cli(&["put", "ns/n@1", f.to_str().unwrap(), "--complete"]));
    let mut reader = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        kinds.push(
            serde_json::from_str::<Value>(&line).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(
        kinds,
        vec!["version.created", "file.added", "version.completed"]
    );
}

#[test]
fn fsck_finds_and_quarantines_corrupt_and_missing_blobs() {
    if on_s3() {
        return; // fsck reads a local data directory
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut s = Server::start(&data_dir);
    let a = dir.path().join("a.bin");
    let b = dir.path().join("b.bin");
    std::fs::write(&a, bytes(10_000, 1)).unwrap();
    std::fs::write(&b, bytes(20_000, 2)).unwrap();
    ok(&s.cli(&[
        "put",
        "ci/x@1",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--complete",
    ]));
    assert!(s.stop().success());

    let fsck = |extra: &[&str]| {
        Command::new(BIN)
            .args(["--json", "fsck", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let clean = fsck(&[]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    let report: Value = serde_json::from_str(&stdout(&clean)).unwrap();
    assert_eq!(report["blobs_checked"], 2);
    assert_eq!(report["bytes_checked"], 30_000);

    // Flip one byte of a's blob; delete b's blob.
    let hex_a = sha256_hex(&bytes(10_000, 1));
    let blob_a = data_dir.join("blobs/sha256").join(&hex_a[..2]).join(&hex_a);
    let mut content = std::fs::read(&blob_a).unwrap();
    content[5000] ^= 0xff;
    std::fs::write(&blob_a, content).unwrap();
    let hex_b = sha256_hex(&bytes(20_000, 2));
    std::fs::remove_file(data_dir.join("blobs/sha256").join(&hex_b[..2]).join(&hex_b)).unwrap();

    let broken = fsck(&[]);
    assert_eq!(broken.status.code(), Some(5));
    let report: Value = serde_json::from_str(&stdout(&broken)).unwrap();
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"corrupt_blob") && kinds.contains(&"missing_blob"),
        "{report}"
    );
    assert!(report.to_string().contains("ci/x@1/a.bin"), "{report}");

    let repaired = fsck(&["--repair"]);
    assert_eq!(
        repaired.status.code(),
        Some(5),
        "problems are still reported when repaired"
    );
    assert!(data_dir.join("quarantine").join(&hex_a).exists());
    assert!(!blob_a.exists());
    // The corrupt blob is never served again: the server now reports it missing.
    let s = Server::start(&data_dir);
    let resp = s.cli(&["get", "ci/x@1/a.bin"]);
    assert!(!resp.status.success());
}
