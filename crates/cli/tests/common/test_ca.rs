//! A throwaway certificate authority for the TLS tests, made with the `openssl` CLI:
//! a CA certificate, and server certificates it signs for `127.0.0.1` and `localhost`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate, to trust (`curl --cacert`, `--ca-cert`).
    pub cert: PathBuf,
    key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(EC);
        args.extend(["-subj", "/CN=artifactstore test CA"]);
        args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&args, dir);
        TestCa {
            dir: dir.to_owned(),
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost` with common name `cn`,
    /// written as `<cn>.pem` and `<cn>.key`; returns (certificate, key).
    pub fn issue(&self, cn: &str) -> (PathBuf, PathBuf) {
        let (csr, cert, key, ext) = (
            format!("{cn}.csr"),
            format!("{cn}.pem"),
            format!("{cn}.key"),
            format!("{cn}.ext"),
        );
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend(EC);
        let subj = format!("/CN={cn}");
        args.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
        openssl(&args, &self.dir);
        std::fs::write(
            self.dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let (ca_cert, ca_key) = (self.cert.to_str().unwrap(), self.key.to_str().unwrap());
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                ca_cert,
                "-CAkey",
                ca_key,
                "-set_serial",
                &serial(cn),
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
            &self.dir,
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}

/// A serial of its own for each common name.
fn serial(cn: &str) -> String {
    let d = artifactstore_model::Digest::of(cn.as_bytes());
    format!("0x{}", &d.hex()[..16])
}
