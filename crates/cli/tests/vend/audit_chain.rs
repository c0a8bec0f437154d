//! `vend audit verify` and `vend audit head` on logs written by a real `vend serve`:
//! the log verifies under its key, and an edited line with a recomputed chain, a cut
//! head, a cut tail and a log without its key do not pass. The chain key never shows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::BIN;
use crate::helpers::*;

const KEY_VAR: &str = "ARTIFACTSTORE_TEST_AUDIT_CHAIN_KEY";

fn setup<'a>(example: &'a str, env: &[(&str, &str)]) -> VendSetup<'a> {
    VendSetup {
        example,
        extra: String::new(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        listen: None,
    }
}

/// The Garage example with `chain_key_ref` set, written into `dir`.
fn example_with_chain_key_ref(dir: &Path, r: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/vend-garage.toml")).unwrap();
    let text = text.replacen(
        "[audit]\n",
        &format!("[audit]\nchain_key_ref = \"{r}\"\n"),
        1,
    );
    assert!(text.contains("chain_key_ref"));
    let path = dir.join("vend-keyed.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Audit lines of every kind a run without Garage writes: refusals, an allow whose
/// minting failed.
fn some_traffic(issuer: &Issuer, vend: &Vend) {
    let (status, _, _) = vend.credentials("not-a-token", json!({}));
    assert_eq!(status, 400);
    let token = issuer.token(writer_claims("chain-subject"));
    for _ in 0..3 {
        let (status, body, _) = vend.credentials(&token, json!({"role": "ci-writer"}));
        assert_eq!(status, 503, "{body}");
    }
    let (status, _, _) = vend.credentials(&token, json!({"role": "nope"}));
    assert_eq!(status, 403);
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run artifactstore");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify(file: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut args = vec!["vend", "audit", "verify", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli(&args, env)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A copy of some lines of a log, beside it (so that its generated key is found the
/// same way: `<copy>.chain-key` does not exist, so the key is given by --key-ref).
fn copy_of(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// A forger without the key: edits line `edited` (from 1), then relinks and reseals it
/// and every later line with SHA-256 in place of the HMAC.
fn forged_with_sha256(lines: &[String], edited: usize) -> Vec<String> {
    let mut out = lines[..edited - 1].to_vec();
    let mut prev = out.last().map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        v["mac"].as_str().unwrap().to_owned()
    });
    for (i, line) in lines.iter().enumerate().skip(edited - 1) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("mac");
        if let Some(p) = &prev {
            o.insert("prev".into(), Value::String(p.clone()));
        }
        if i == edited - 1 {
            o.insert("subject".into(), json!("someone-innocent"));
        }
        let body = serde_json::to_string(&v).unwrap();
        let mac = sha256_hex(body.as_bytes());
        out.push(format!("{},\"mac\":\"{mac}\"}}", &body[..body.len() - 1]));
        prev = Some(mac);
    }
    out
}

#[test]
fn a_served_log_verifies_under_its_generated_key_and_forgeries_fail() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let mut vend = Vend::start(&issuer, None, setup("examples/vend-garage.toml", &[]));
    some_traffic(&issuer, &vend);
    let key_file = vend.dir.path().join("audit.log.chain-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the generated key is private");
    }
    let key_ref = format!("file:{}", key_file.display());

    // Intact: authenticated under the key generated beside the log.
    let (code, out, err) = verify(&vend.audit, &[], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("authenticated under key id"), "{out}");
    let (code, head, err) = cli(
        &["vend", "audit", "head", vend.audit.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let head = head.trim().to_owned();
    assert_eq!(head.len(), 64, "{head}");
    assert!(out.contains(&head), "verify and head agree: {out}");
    let (code, out, _) = verify(&vend.audit, &["--expect-head", &head], &[]);
    assert_eq!(code, Some(0), "{out}");
    let (code, json_out, _) = cli(
        &[
            "--json",
            "vend",
            "audit",
            "verify",
            vend.audit.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0));
    let report: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(report["authenticated"], true, "{report}");
    assert_eq!(report["head"], head.as_str());

    // Later lines: the shipped head is still in the chain.
    some_traffic(&issuer, &vend);
    let (code, out, _) = verify(&vend.audit, &["--expect-head", &head], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("appended after it"), "{out}");
    vend.stop();

    let original = lines(&vend.audit);
    assert!(
        original[0].contains("\"event\":\"audit.genesis\""),
        "{}",
        original[0]
    );
    assert!(original.len() >= 8, "{original:?}");
    let dir = vend.dir.path();
    let broken = |file: &Path, extra: &[&str]| {
        let mut args = vec!["--key-ref", key_ref.as_str()];
        args.extend_from_slice(extra);
        let (code, out, err) = verify(file, &args, &[]);
        assert_eq!(code, Some(5), "{}: {out}{err}", file.display());
        out
    };

    // An edited line, the chain recomputed with SHA-256: the edited line fails.
    let forged = copy_of(dir, "forged.log", &forged_with_sha256(&original, 3));
    let out = broken(&forged, &[]);
    assert!(out.contains("BROKEN at line 3"), "{out}");
    assert!(out.contains("MAC does not verify"), "{out}");
    // Without the key the forgery is structurally sound: not exit 0, and it says why.
    let (code, out, _) = verify(&forged, &[], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("NOT AUTHENTICATED"), "{out}");

    // A cut head: the first line is no genesis.
    let cut_head = copy_of(dir, "cut-head.log", &original[2..]);
    let out = broken(&cut_head, &[]);
    assert!(out.contains("BROKEN at line 1"), "{out}");
    assert!(out.contains("head of the file was cut"), "{out}");

    // A cut tail, against the head shipped before the cut.
    let (_, final_head, _) = cli(
        &["vend", "audit", "head", vend.audit.to_str().unwrap()],
        &[],
    );
    let cut_tail = copy_of(dir, "cut-tail.log", &original[..original.len() - 2]);
    let (code, out, _) = verify(&cut_tail, &["--key-ref", &key_ref], &[]);
    assert_eq!(code, Some(0), "what is left still chains: {out}");
    let out = broken(&cut_tail, &["--expect-head", final_head.trim()]);
    assert!(out.contains("cut from the end"), "{out}");

    // A torn last line.
    let torn = dir.join("torn.log");
    std::fs::write(
        &torn,
        original.join("\n") + "\n" + &original[1][..original[1].len() / 2],
    )
    .unwrap();
    let out = broken(&torn, &[]);
    assert!(
        out.contains(&format!("BROKEN at line {}", original.len() + 1)),
        "{out}"
    );
    let (code, torn_head, err) = cli(&["vend", "audit", "head", torn.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(torn_head.trim(), final_head.trim());
    assert!(err.contains("torn"), "{err}");

    // A head that is not a hash is a usage error.
    let (code, _, err) = verify(&vend.audit, &["--expect-head", "abc"], &[]);
    assert_eq!(code, Some(2), "{err}");

    // The key never shows.
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    let shown = [
        verify(&vend.audit, &[], &[]),
        verify(&forged, &["--key-ref", &key_ref], &[]),
        cli(
            &[
                "--json",
                "vend",
                "audit",
                "head",
                vend.audit.to_str().unwrap(),
            ],
            &[],
        ),
    ];
    for (_, out, err) in &shown {
        assert!(!out.contains(&key) && !err.contains(&key));
    }
    assert!(!std::fs::read_to_string(&vend.audit).unwrap().contains(&key));
    assert!(!vend.logs().contains(&key));
}

#[test]
fn a_configured_chain_key_verifies_by_reference_and_never_shows() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let canary = format!("chain-key-canary-{}-0123456789abcdef", std::process::id());
    let examples = tempfile::tempdir().unwrap();
    let example = example_with_chain_key_ref(examples.path(), &format!("env:{KEY_VAR}"));
    let env = [(KEY_VAR, canary.as_str())];
    let mut vend = Vend::start(&issuer, None, setup(&example, &env));
    some_traffic(&issuer, &vend);
    assert!(
        !vend.dir.path().join("audit.log.chain-key").exists(),
        "with chain_key_ref set, no key is generated"
    );
    let key_ref = format!("env:{KEY_VAR}");

    let (code, out, err) = verify(&vend.audit, &["--key-ref", &key_ref], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&key_ref), "{out}");

    // The config names the key: the service's environment is enough.
    let config = vend.dir.path().join("vend.toml");
    let config_env = [
        (KEY_VAR, canary.as_str()),
        ("ARTIFACTSTORE_VEND_ISSUER", issuer.url.as_str()),
        ("ARTIFACTSTORE_VEND_AUDIENCE", AUDIENCE),
        ("ARTIFACTSTORE_VEND_AUDIT_LOG", vend.audit.to_str().unwrap()),
        ("ARTIFACTSTORE_VEND_BUCKET", "artifacts"),
        ("ARTIFACTSTORE_VEND_GARAGE_ADMIN_URL", "http://127.0.0.1:9"),
        ("ARTIFACTSTORE_VEND_GARAGE_ADMIN_TOKEN_REF", "env:UNUSED"),
    ];
    let (code, out, err) = verify(
        &vend.audit,
        &["--config", config.to_str().unwrap()],
        &config_env,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, head, err) = cli(
        &[
            "vend",
            "audit",
            "head",
            "--config",
            config.to_str().unwrap(),
        ],
        &config_env,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(head.trim()), "{out} / {head}");

    // No key found: structure only, and not a success.
    let (code, out, _) = verify(&vend.audit, &[], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("NOT AUTHENTICATED"), "{out}");

    // Another key: the genesis names a different key id.
    let wrong = [(KEY_VAR, "another-key-entirely-of-thirty-two-bytes")];
    let (code, out, _) = verify(&vend.audit, &["--key-ref", &key_ref], &wrong);
    assert_eq!(code, Some(5), "{out}");
    assert!(
        out.contains("BROKEN at line 1") && out.contains("key id"),
        "{out}"
    );
    vend.stop();

    let mut seen = vec![
        std::fs::read_to_string(&vend.audit).unwrap(),
        vend.logs(),
        out,
    ];
    for args in [
        vec![
            "vend",
            "audit",
            "verify",
            vend.audit.to_str().unwrap(),
            "--key-ref",
            &key_ref,
        ],
        vec![
            "--json",
            "vend",
            "audit",
            "verify",
            vend.audit.to_str().unwrap(),
            "--key-ref",
            &key_ref,
        ],
        vec!["vend", "audit", "head", vend.audit.to_str().unwrap()],
        vec![
            "--json",
            "vend",
            "audit",
            "head",
            vend.audit.to_str().unwrap(),
        ],
    ] {
        let (_, out, err) = cli(&args, &env);
        seen.push(out);
        seen.push(err);
    }
    for text in &seen {
        assert!(!text.contains(&canary), "the chain key showed: {text}");
        assert!(
            !text.contains("chain-key-canary"),
            "part of the chain key showed: {text}"
        );
    }
}

/// A log in the unkeyed format of older versions is not appended to: `vend serve` moves
/// it aside and begins a file chained to its head; a restart keeps the generated key and
/// goes on with the same chain.
#[test]
fn an_unkeyed_log_is_moved_aside_and_a_restart_continues_the_chain() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("vend-audit.log");
    let first = format!(
        "{{\"seq\":1,\"event\":\"decision\",\"prev\":\"{}\"}}",
        "0".repeat(64)
    );
    let second = format!(
        "{{\"seq\":2,\"event\":\"decision\",\"prev\":\"{}\"}}",
        sha256_hex(first.as_bytes())
    );
    std::fs::write(&log, format!("{first}\n{second}\n")).unwrap();
    let old_head = sha256_hex(second.as_bytes());
    let env = [("ARTIFACTSTORE_VEND_AUDIT_LOG", log.to_str().unwrap())];

    let mut vend = Vend::start(&issuer, None, setup("examples/vend-garage.toml", &env));
    some_traffic(&issuer, &vend);
    vend.stop();
    let aside: Vec<PathBuf> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("vend-audit.log.unkeyed-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(&aside[0]).unwrap(),
        format!("{first}\n{second}\n"),
        "the old file is kept as it was"
    );
    assert!(vend.logs().contains("moved it aside"), "{}", vend.logs());
    let parsed = |out: &str| -> Value { serde_json::from_str(out).unwrap() };
    let (code, out, err) = cli(
        &["--json", "vend", "audit", "verify", log.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let before = parsed(&out);
    assert_eq!(before["previous_head"], old_head.as_str(), "{before}");
    let genesis: Value = serde_json::from_str(&lines(&log)[0]).unwrap();
    assert_eq!(genesis["seq"], 3, "seq goes on from the old file");

    // A restart on the same log: same key, same chain, no new genesis.
    let mut again = Vend::start(&issuer, None, setup("examples/vend-garage.toml", &env));
    some_traffic(&issuer, &again);
    again.stop();
    let (code, out, err) = cli(
        &[
            "--json",
            "vend",
            "audit",
            "verify",
            log.to_str().unwrap(),
            "--expect-head",
            before["head"].as_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let after = parsed(&out);
    assert_eq!(after["key_id"], before["key_id"]);
    assert!(after["lines"].as_u64() > before["lines"].as_u64());
    assert!(after["lines_after_expected_head"].as_u64() > Some(0));
    let geneses = lines(&log)
        .iter()
        .filter(|l| l.contains("\"event\":\"audit.genesis\""))
        .count();
    assert_eq!(geneses, 1);
}
