use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// A self-signed P-256 certificate for `cn` and its key, written by the `openssl` CLI.
fn write_pair(cert: &Path, key: &Path, cn: &str) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {out:?}");
}

fn same(a: &TlsAcceptor, b: &TlsAcceptor) -> bool {
    Arc::ptr_eq(a.config(), b.config())
}

#[test]
fn a_key_that_is_not_the_certificates_and_a_file_without_a_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let [c1, k1, c2, k2] = ["c1", "k1", "c2", "k2"].map(|n| dir.path().join(n));
    write_pair(&c1, &k1, "one");
    write_pair(&c2, &k2, "two");
    assert!(Tls::load(&c1, &k1).is_ok());
    let e = Tls::load(&c1, &k2).unwrap_err();
    assert!(matches!(e, TlsError::Unusable { .. }), "{e}");
    let e = Tls::load(&k1, &k1).unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    let e = Tls::load(&c1, &c1).unwrap_err();
    assert!(matches!(e, TlsError::BadKey { .. }), "{e}");
    let e = Tls::load(&dir.path().join("absent"), &k1).unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
}

#[test]
fn a_changed_pair_is_served_to_new_connections_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    write_pair(&cert, &key, "first");
    let tls = Tls::load(&cert, &key).unwrap();
    let start = Instant::now();
    let first = tls.acceptor_at(start);

    // Unchanged files: the same configuration.
    let later = start + Duration::from_secs(2);
    assert!(same(&first, &tls.acceptor_at(later)));

    // A new pair: new connections get it, but not before the next look at the files.
    let (next_cert, next_key) = (dir.path().join("c2"), dir.path().join("k2"));
    write_pair(&next_cert, &next_key, "second");
    std::fs::rename(&next_cert, &cert).unwrap();
    std::fs::rename(&next_key, &key).unwrap();
    assert!(
        same(&first, &tls.acceptor_at(later)),
        "looked again within a second"
    );
    let second = tls.acceptor_at(later + Duration::from_secs(1));
    assert!(!same(&first, &second), "the renewed pair was not loaded");

    // Half of a renewal (a new certificate, the old key): refused, the pair in service stays.
    write_pair(&next_cert, &next_key, "third");
    std::fs::rename(&next_cert, &cert).unwrap();
    let at = later + Duration::from_secs(2);
    assert!(same(&second, &tls.acceptor_at(at)));
    assert!(tls.0.state.lock().unwrap().refused.is_some());
    // A half-written key file: still the pair in service.
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\nMIG").unwrap();
    assert!(same(&second, &tls.acceptor_at(at + Duration::from_secs(1))));
    // The renewal completes: the new pair is served.
    std::fs::rename(&next_key, &key).unwrap();
    let third = tls.acceptor_at(at + Duration::from_secs(2));
    assert!(
        !same(&second, &third),
        "the completed renewal was not loaded"
    );
    assert!(tls.0.state.lock().unwrap().refused.is_none());
}
