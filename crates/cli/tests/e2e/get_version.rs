//! `artifactstore get NS/NAME@VERSION -o DIR` on the real binary: every file with its
//! bytes, a rerun that fetches nothing, repairs of wrong local files, `--include`, a
//! refused corrupt download, and an interrupted run that leaves no partial file under a
//! final name and completes when run again.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::cli::ok;
use crate::common::*;

/// The file downloads the server has answered so far (its request counter).
fn file_gets(s: &Server) -> u64 {
    let text = block_on({
        let url = format!("{}/metrics", s.url);
        async move { http().get(url).send().await.unwrap().text().await.unwrap() }
    });
    text.lines()
        .filter(|l| {
            l.starts_with("artifactstore_http_requests_total{")
                && l.contains("method=\"GET\"")
                && l.contains("route=\"/v1/artifacts/{namespace}/{name}/{version}/{*path}\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn lines_starting(out: &str, verb: &str) -> usize {
    out.lines().filter(|l| l.starts_with(verb)).count()
}

#[test]
fn get_dir_fetches_every_file_then_only_what_is_missing_or_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let tree = dir.path().join("tree");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", b"alpha\n".to_vec()),
        ("empty", Vec::new()),
        ("big.bin", bytes(3_000_000, 1)),
        ("reports/y.xml", b"<y/>".to_vec()),
        ("reports/deep/x.xml", b"<x/>".to_vec()),
        ("donn\u{e9}es/\u{e9}t\u{e9}.txt", b"non-ASCII\n".to_vec()),
    ];
    for (path, data) in &files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    ok(&s.cli(&["put", "ci/whole@1", tree.to_str().unwrap(), "--complete"]));

    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let before = file_gets(&s);
    let first = ok(&s.cli(&["get", "ci/whole@latest", "-o", o, "--jobs", "3"]));
    assert_eq!(lines_starting(&first, "fetched "), files.len(), "{first}");
    for (path, data) in &files {
        assert_eq!(&std::fs::read(out.join(path)).unwrap(), data, "{path}");
    }
    assert_eq!(file_gets(&s) - before, files.len() as u64);

    // A rerun finds everything in place: nothing is requested, nothing rewritten.
    let times: Vec<SystemTime> = files.iter().map(|(p, _)| mtime(&out.join(p))).collect();
    let before = file_gets(&s);
    let second = ok(&s.cli(&["get", "ci/whole@1", "-o", o]));
    assert_eq!(
        lines_starting(&second, "unchanged "),
        files.len(),
        "{second}"
    );
    assert_eq!(
        file_gets(&s),
        before,
        "a complete directory fetches nothing"
    );
    let after: Vec<SystemTime> = files.iter().map(|(p, _)| mtime(&out.join(p))).collect();
    assert_eq!(times, after);

    // Wrong bytes of the right size, a truncated file, a missing one beside a stale
    // temp file of an earlier run: those three are fetched again, nothing else.
    let mut wrong = b"alpha\n".to_vec();
    wrong[0] = b'A';
    std::fs::write(out.join("a.txt"), &wrong).unwrap();
    std::fs::write(out.join("big.bin"), &bytes(3_000_000, 1)[..1000]).unwrap();
    std::fs::remove_file(out.join("reports/y.xml")).unwrap();
    std::fs::write(
        out.join("reports/.y.xml.artifactstore-part"),
        b"stale partial",
    )
    .unwrap();
    let before = file_gets(&s);
    let third = ok(&s.cli(&["get", "ci/whole@1", "-o", o]));
    assert_eq!(lines_starting(&third, "fetched "), 3, "{third}");
    assert_eq!(file_gets(&s) - before, 3);
    for (path, data) in &files {
        assert_eq!(&std::fs::read(out.join(path)).unwrap(), data, "{path}");
    }
    // The stale file is not this run's temp file: it is neither read nor removed.
    assert_eq!(
        std::fs::read(out.join("reports/.y.xml.artifactstore-part")).unwrap(),
        b"stale partial"
    );

    // --include takes a subset; `**/` also matches no directory.
    let subset = dir.path().join("subset");
    let sub = subset.to_str().unwrap();
    let o4 = ok(&s.cli(&[
        "--json",
        "get",
        "ci/whole@1",
        "-o",
        sub,
        "--include",
        "reports/**/*.xml",
        "--include",
        "*.txt",
    ]));
    let doc: serde_json::Value = serde_json::from_str(&o4).unwrap();
    let listed: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["a.txt", "reports/deep/x.xml", "reports/y.xml"]);
    let mut on_disk = Vec::new();
    walk(&subset, &subset, &mut on_disk);
    on_disk.sort();
    assert_eq!(on_disk, ["a.txt", "reports/deep/x.xml", "reports/y.xml"]);

    // A whole version needs a directory; --include needs a whole version.
    let no_dir = s.cli(&["get", "ci/whole@1"]);
    assert_eq!(no_dir.status.code(), Some(2), "{}", stderr(&no_dir));
    let include_one = s.cli(&["get", "ci/whole@1/a.txt", "--include", "*"]);
    assert_eq!(include_one.status.code(), Some(2));
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), root, out);
        } else {
            let rel = e.path().strip_prefix(root).unwrap().to_owned();
            out.push(rel.to_str().unwrap().to_owned());
        }
    }
}

#[test]
fn a_corrupt_download_is_refused_and_never_renamed_into_place() {
    if on_s3() {
        return; // the blob is altered on the server's disk
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let data = bytes(100_000, 5);
    let src = dir.path().join("f.bin");
    std::fs::write(&src, &data).unwrap();
    ok(&s.cli(&["put", "ci/rot@1", src.to_str().unwrap(), "--complete"]));
    let hex = sha256_hex(&data);
    let blob = s.data_dir.join("blobs/sha256").join(&hex[..2]).join(&hex);
    let mut rotten = data.clone();
    rotten[50_000] ^= 1;
    std::fs::write(&blob, &rotten).unwrap();

    let out = dir.path().join("out");
    let o = s.cli(&["get", "ci/rot@1", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "integrity: {}", stderr(&o));
    assert!(stderr(&o).contains("f.bin"), "{}", stderr(&o));
    assert!(
        !out.join("f.bin").exists(),
        "a wrong file under its final name"
    );
    assert_eq!(temp_files(&out), Vec::<String>::new());
}

/// The names of the temp files in `dir` (downloads under way or interrupted).
fn temp_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".artifactstore-part"))
        .collect();
    names.sort();
    names
}

#[cfg(unix)]
#[test]
fn temp_files_never_write_through_a_planted_link_nor_take_a_listed_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d/f"), b"the file").unwrap();
    std::fs::write(
        tree.join("d/.f.artifactstore-part"),
        b"a file named like a temp",
    )
    .unwrap();
    ok(&s.cli(&["put", "ci/temps@1", tree.to_str().unwrap(), "--complete"]));

    // A link planted where a fixed temp name would be, pointing outside the directory.
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, b"keep me").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("d")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("d/.f.artifactstore-part")).unwrap();

    ok(&s.cli(&[
        "get",
        "ci/temps@1",
        "-o",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]));
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert_eq!(std::fs::read(out.join("d/f")).unwrap(), b"the file");
    // The listed file replaces the link rather than writing through it.
    assert!(
        !std::fs::symlink_metadata(out.join("d/.f.artifactstore-part"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(out.join("d/.f.artifactstore-part")).unwrap(),
        b"a file named like a temp"
    );
    assert_eq!(temp_files(&out.join("d")), [".f.artifactstore-part"]);
}

#[test]
fn paths_differing_only_in_case_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("Readme.md"), b"upper").unwrap();
    std::fs::write(tree.join("README.md"), b"lower").unwrap();
    ok(&s.cli(&["put", "ci/case@1", tree.to_str().unwrap(), "--complete"]));
    let out = dir.path().join("out");
    let o = s.cli(&["get", "ci/case@1", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("differ only in case"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn an_interrupted_download_leaves_no_partial_file_and_a_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let data = bytes(160 << 20, 9);
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("large.bin"), &data).unwrap();
    std::fs::write(tree.join("small.txt"), b"small").unwrap();
    ok(&s.cli(&["put", "ci/cut@1", tree.to_str().unwrap(), "--complete"]));

    let out = dir.path().join("out");
    let final_name = out.join("large.bin");
    let mut child = Command::new(BIN)
        .args([
            "get",
            "ci/cut@1",
            "-o",
            out.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .env("ARTIFACTSTORE_URL", &s.url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL as soon as the large file is partly written.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written = std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".large.bin."))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>();
        if written > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the download ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !final_name.exists(),
        "a partial file under its final name after SIGKILL"
    );
    let interrupted = temp_files(&out);
    assert_eq!(
        interrupted.len(),
        1,
        "the interrupted download was in its temp file"
    );

    let rerun = ok(&s.cli(&["get", "ci/cut@1", "-o", out.to_str().unwrap()]));
    assert!(rerun.contains("fetched large.bin"), "{rerun}");
    assert_eq!(
        sha256_hex(&std::fs::read(&final_name).unwrap()),
        sha256_hex(&data)
    );
    // The rerun wrote through a temp file of its own; the interrupted one is left be.
    assert_eq!(temp_files(&out), interrupted);
}

#[tokio::test]
async fn a_tar_whose_blob_is_gone_midway_reaches_the_client_truncated() {
    if on_s3() {
        return; // the blob is removed from the server's disk
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let lost = bytes(200_000, 11);
    std::fs::write(tree.join("a.txt"), b"first").unwrap();
    std::fs::write(tree.join("b.bin"), &lost).unwrap();
    std::fs::write(tree.join("c.txt"), b"third").unwrap();
    ok(&s.cli(&["put", "ci/gap@1", tree.to_str().unwrap(), "--complete"]));
    let whole = http()
        .get(s.artifacts("ci/gap/1?format=tar"))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert!(
        whole.bytes().await.is_ok(),
        "the intact archive arrives whole"
    );

    let hex = sha256_hex(&lost);
    std::fs::remove_file(s.data_dir.join("blobs/sha256").join(&hex[..2]).join(&hex)).unwrap();
    let resp = http()
        .get(s.artifacts("ci/gap/1?format=tar"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the head is sent before the blobs are read"
    );
    let body = resp.bytes().await;
    assert!(
        body.is_err(),
        "a well-formed answer of {} bytes without b.bin",
        body.map(|b| b.len()).unwrap_or(0)
    );
    assert!(
        s.logs().contains("archive aborted midway"),
        "the server logs why: {}",
        s.logs()
    );
}

#[cfg(unix)]
#[test]
fn a_symlinked_directory_inside_the_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("keys")).unwrap();
    std::fs::write(
        tree.join("keys/authorized_keys"),
        b"ssh-ed25519 AAAA hostile",
    )
    .unwrap();
    ok(&s.cli(&["put", "ci/keys@1", tree.to_str().unwrap(), "--complete"]));

    let outside = dir.path().join("dot-ssh");
    std::fs::create_dir_all(&outside).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("keys")).unwrap();

    let o = s.cli(&["get", "ci/keys@1", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a symlink"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing is written through the link"
    );
}
