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
