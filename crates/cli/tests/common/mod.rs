//! Starts the real `artifactstore` binary on port 0 in a temp dir and talks to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_artifactstore");

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub stderr_log: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let stderr_log = data_dir.with_extension(format!("stderr.{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("ARTIFACTSTORE_URL")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start artifactstore serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listen line");
        let url = line
            .trim()
            .strip_prefix("artifactstore listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; stderr: {}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                )
            })
            .to_owned();
        Server {
            child,
            url,
            data_dir: data_dir.to_owned(),
            stderr_log,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe_sigterm(self.child.id());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        panic!("server did not stop on SIGTERM within 10 s");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn artifacts(&self, rest: &str) -> String {
        format!("{}/v1/artifacts/{rest}", self.url)
    }

    /// Runs a client command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("ARTIFACTSTORE_URL", &self.url)
            .stdin(Stdio::null())
            .output()
            .expect("run artifactstore")
    }

    /// Temp files currently in the data directory.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir.join("tmp"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    /// Whether a blob with exactly these bytes is stored.
    pub fn holds_blob(&self, data: &[u8]) -> bool {
        let hex = sha256_hex(data);
        self.data_dir
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .exists()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

pub fn sha256_hex(data: &[u8]) -> String {
    artifactstore_model::Digest::of(data).hex()
}

pub fn digest(data: &[u8]) -> String {
    artifactstore_model::Digest::of(data).to_string()
}

/// Deterministic pseudo-random bytes, distinct per seed.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Polls `f` until it returns true, for at most `secs` seconds.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
