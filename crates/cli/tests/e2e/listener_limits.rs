//! Slowloris and the other listener limits on the real `artifactstore serve` (any
//! backend: only `/healthz` is asked).

#[path = "../common/listener_checks.rs"]
mod listener_checks;

use std::process::Command;

use crate::common::*;

#[test]
fn half_sent_heads_idle_connections_and_connections_beyond_the_cap_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, listener_checks::LIMITS_TOML).unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    listener_checks::check_all(&server.url);
}

/// With its descriptors used up (a hard open-file limit of 64), accepting fails with
/// EMFILE: the server pauses between attempts instead of spinning on the error, keeps
/// running, and serves again once connections are gone.
#[test]
fn out_of_descriptors_the_server_pauses_accepting_and_recovers() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("ARTIFACTSTORE_URL")
        .env("RUST_LOG", "info");
    // SAFETY: only setrlimit runs between fork and exec, and it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let (mut child, url) = spawn_announcing(cmd, "artifactstore listening on ", &log);
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    // More than the server has descriptors for: the rest wait in the listen backlog.
    let held: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let logs = std::fs::read_to_string(&log).unwrap();
    let pauses = logs
        .lines()
        .filter(|l| l.contains("cannot accept connections"))
        .count();
    // Pauses of 10, 20, 40 ... ms up to 1 s: about ten in three seconds, not thousands.
    assert!((1..=40).contains(&pauses), "{pauses} pauses:\n{logs}");
    assert!(child.try_wait().unwrap().is_none(), "the server exited");

    drop(held);
    let healthz = format!("{url}/healthz");
    let status = block_on(async move {
        for _ in 0..150 {
            if let Ok(r) = http().get(&healthz).send().await {
                return Some(r.status().as_u16());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        None
    });
    assert_eq!(
        status,
        Some(200),
        "not served again:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_zero_limit_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for key in listener_checks::KEYS {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env(format!("ARTIFACTSTORE_{}", key.to_uppercase()), "0")
            .output()
            .unwrap();
        listener_checks::assert_refused(&out, key);
    }
}
