//! The client's bearer token from each source, against stand-ins that record what they
//! get: a GitHub Actions runner's ID token endpoint and an artifact server. The tokens
//! are canaries that must never show in what the command prints, refused or not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use crate::common::{BIN, stderr, stdout};

/// What a stand-in was asked.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
}

type Answer = (u16, String);

/// A one-request-per-connection HTTP server on 127.0.0.1:0 that records each request
/// and answers what `answer` says (given the requests seen so far, this one last).
struct StandIn {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn start(answer: impl Fn(&[Seen]) -> Answer + Send + 'static) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (mut authorization, mut length) = (None, 0usize);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    let (name, value) = h.split_once(':').unwrap_or((&h, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "authorization" => authorization = Some(value.trim().to_owned()),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let (status, body) = {
                    let mut seen = log.lock().unwrap();
                    seen.push(Seen {
                        method: method.to_owned(),
                        target: target.to_owned(),
                        authorization,
                    });
                    answer(&seen)
                };
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                if status == 401 {
                    head.push_str(
                        "www-authenticate: Bearer realm=\"artifactstore\", error=\"invalid_token\"\r\n",
                    );
                }
                let _ = stream.write_all(format!("{head}\r\n{body}").as_bytes());
            }
        });
        StandIn { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const LISTING: &str = r#"{"items":[{"name":"listed-namespace"}],"next_cursor":null}"#;

fn listing(_: &[Seen]) -> Answer {
    (200, LISTING.to_owned())
}

fn refusal(code: &str, message: &str, reason: Option<&str>) -> String {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(r) = reason {
        error["reason"] = r.into();
    }
    serde_json::json!({ "error": error }).to_string()
}

/// A JWT-shaped token (unsigned: only the client reads it, for `exp`).
fn jwt(marker: &str, exp: u64) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let payload = format!(r#"{{"sub":"{marker}","exp":{exp}}}"#);
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&payload)
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs the CLI against `server` with none of the caller's token settings, only `env`.
fn cli(server: &StandIn, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("ARTIFACTSTORE_URL", &server.url);
    for var in [
        "ARTIFACTSTORE_TOKEN",
        "ARTIFACTSTORE_TOKEN_FILE",
        "ARTIFACTSTORE_TOKEN_ENV",
        "ARTIFACTSTORE_TOKEN_FROM",
        "ARTIFACTSTORE_TOKEN_AUDIENCE",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run artifactstore")
}

/// Runs `args` with `--token-from github-actions` and `runner` as the runner's endpoint.
fn cli_github(server: &StandIn, runner: &StandIn, request_token: &str, args: &[&str]) -> Output {
    let request_url = format!("{}/idtoken?api-version=2.0", runner.url);
    let mut args = args.to_vec();
    args.extend(["--token-from", "github-actions"]);
    let env = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token),
    ];
    cli(server, &args, &env)
}

fn assert_hidden(out: &Output, secrets: &[&str]) {
    let (o, e) = (stdout(out), stderr(out));
    for s in secrets {
        assert!(
            !o.contains(s) && !e.contains(s),
            "a token was printed:\n{o}\n{e}"
        );
    }
}

#[test]
fn github_actions_token_is_requested_with_the_audience_and_sent() {
    let request_token = "canary-request-7a41d0";
    let issued = jwt("canary-issued-c3b9", now() + 3600);
    let answer = format!(r#"{{"count":1,"value":"{issued}"}}"#);
    let runner = StandIn::start(move |_| (200, answer.clone()));
    let server = StandIn::start(listing);
    let out = cli_github(
        &server,
        &runner,
        request_token,
        &["ls", "--token-audience", "aud-e2e"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "listed-namespace");
    let asked = runner.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some(&*format!("Bearer {request_token}"))
    );
    assert!(
        asked[0].target.starts_with("/idtoken?api-version=2.0&"),
        "{asked:?}"
    );
    assert!(asked[0].target.contains("audience=aud-e2e"), "{asked:?}");
    let got = server.seen();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(&*format!("Bearer {issued}"))
    );
    assert_hidden(&out, &[request_token, "canary-issued", &issued]);
}

/// A token that expires within a minute is requested again before the next request,
/// and a 401 `token_expired` to a request that can be sent again gets one retry with a
/// fresh token.
#[test]
fn an_expiring_or_expired_token_is_requested_again() {
    let runner = StandIn::start(|seen| {
        // Each issued token is near its expiry, so each request asks for a new one.
        let t = jwt(&format!("canary-issued-{}", seen.len()), now() + 30);
        (200, format!(r#"{{"value":"{t}"}}"#))
    });
    let server = StandIn::start(|seen| {
        if seen.len() == 1 {
            let body = refusal(
                "unauthenticated",
                "the token expired",
                Some("token_expired"),
            );
            return (401, body);
        }
        (200, LISTING.to_owned())
    });
    let out = cli_github(&server, &runner, "canary-request-2", &["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let asked = runner.seen();
    assert!(
        asked
            .iter()
            .all(|s| s.target.contains("audience=artifactstore")),
        "{asked:?}"
    );
    let got = server.seen();
    assert_eq!(got.len(), 2, "one retry: {got:?}");
    assert_ne!(
        got[0].authorization, got[1].authorization,
        "the retry has a new token"
    );
    assert!(asked.len() >= 2, "{asked:?}");
    assert_hidden(&out, &["canary-request", "canary-issued"]);
}

#[test]
fn token_file_and_env_tokens_are_sent() {
    let server = StandIn::start(listing);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "canary-file-token-55e1\n").unwrap();
    let out = cli(
        &server,
        &["ls", "--token-file", file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out2 = cli(
        &server,
        &["ls", "--token-env", "CI_ID_TOKEN"],
        &[("CI_ID_TOKEN", "canary-env-token-91")],
    );
    assert!(out2.status.success(), "{}", stderr(&out2));
    let out3 = cli(
        &server,
        &["ls"],
        &[("ARTIFACTSTORE_TOKEN", "canary-static-token-3")],
    );
    assert!(out3.status.success(), "{}", stderr(&out3));
    let auth: Vec<_> = server.seen().into_iter().map(|s| s.authorization).collect();
    assert_eq!(
        auth,
        [
            Some("Bearer canary-file-token-55e1".to_owned()),
            Some("Bearer canary-env-token-91".to_owned()),
            Some("Bearer canary-static-token-3".to_owned()),
        ]
    );
    for o in [&out, &out2, &out3] {
        assert_hidden(o, &["canary"]);
    }

    // Two sources at once are refused before anything is sent.
    let out = cli(
        &server,
        &["ls", "--token-file", file.to_str().unwrap()],
        &[("ARTIFACTSTORE_TOKEN", "canary-static-token-3")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--token-file") && stderr(&out).contains("ARTIFACTSTORE_TOKEN"));
    assert_hidden(&out, &["canary"]);
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn refusals_exit_with_their_codes_and_reasons_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "canary-refused-token-0c2f").unwrap();
    let token_file = file.to_str().unwrap();

    let unauthenticated = StandIn::start(|_| {
        let m = "the token's audience is not this server's";
        (
            401,
            refusal("unauthenticated", m, Some("audience_mismatch")),
        )
    });
    let out = cli(&unauthenticated, &["ls", "--token-file", token_file], &[]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("unauthenticated") && e.contains("audience_mismatch"),
        "{e}"
    );
    assert!(e.contains("audience is not this server's"), "{e}");
    assert_eq!(
        unauthenticated.seen().len(),
        1,
        "no retry for a token that did not expire"
    );
    assert_hidden(&out, &["canary"]);

    // No token at all: the message says how to give one.
    let out = cli(&unauthenticated, &["ls"], &[]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        stderr(&out).contains("no token was sent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(unauthenticated.seen()[1].authorization, None);

    let forbidden = StandIn::start(|_| {
        let m = "this caller is not granted `write` on namespace main";
        (403, refusal("forbidden", m, None))
    });
    let out = cli(
        &forbidden,
        &["rm", "main/app@1.0", "--token-file", token_file],
        &[],
    );
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("forbidden") && e.contains("`write` on namespace main"),
        "{e}"
    );
    assert_hidden(&out, &["canary"]);

    // A streamed upload (a file past 1 MiB) refused as expired is not sent again (its
    // body is gone); a small one, sent from memory, is sent once more with the token got
    // again.
    let expired = StandIn::start(|_| {
        (
            401,
            refusal(
                "unauthenticated",
                "the token expired",
                Some("token_expired"),
            ),
        )
    });
    for (bytes, sent) in [((1 << 20) + 1, 1), (7, 2)] {
        let upload = dir.path().join(format!("a-{bytes}.bin"));
        std::fs::write(&upload, vec![b'x'; bytes]).unwrap();
        let before = expired.seen().len();
        let out = cli(
            &expired,
            &[
                "put",
                "main/app@1.0",
                upload.to_str().unwrap(),
                "--token-file",
                token_file,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
        let puts: Vec<_> = expired.seen()[before..]
            .iter()
            .filter(|s| s.method == "PUT")
            .cloned()
            .collect();
        assert_eq!(puts.len(), sent, "{bytes} bytes: {puts:?}");
        assert!(stderr(&out).contains("token_expired"), "{}", stderr(&out));
        assert_hidden(&out, &["canary"]);
    }

    // The runner refusing is exit 7 too, and what it answered is not repeated.
    let runner = StandIn::start(|_| (403, r#"{"value":"canary-runner-body"}"#.to_owned()));
    let out = cli_github(&forbidden, &runner, "canary-request-9", &["ls"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    assert_hidden(&out, &["canary"]);
}
