//! `serve` configuration, layered: built-in defaults ← config file ← `ARTIFACTSTORE_*`
//! environment ← command-line flags. Unknown keys in the file are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Keys read from the environment as `ARTIFACTSTORE_<KEY>`.
pub const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "max_upload_size",
    "insecure_no_auth",
    "log_format",
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address and port to listen on. Loopback by default.
    pub listen: SocketAddr,
    /// Directory for blobs, temp files and the SQLite index.
    pub data_dir: PathBuf,
    /// Metadata database URL; defaults to `sqlite://<data_dir>/index.db`.
    pub database_url: Option<String>,
    /// Largest accepted upload in bytes.
    pub max_upload_size: u64,
    /// Allow listening on a non-loopback address without authentication.
    pub insecure_no_auth: bool,
    /// `text` or `json` logs on stderr.
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";
pub const DEFAULT_DATA_DIR: &str = "artifactstore-data";

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            max_upload_size: 64 << 30,
            insecure_no_auth: false,
            log_format: LogFormat::Text,
        }
    }
}

/// Flags given on the command line; `None` means "not given, keep the layer below".
#[derive(Debug, Default, Serialize)]
pub struct ServeFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_size: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_no_auth: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

pub fn load(file: Option<&Path>, flags: &ServeFlags) -> anyhow::Result<ServeConfig> {
    let mut fig = Figment::from(Serialized::defaults(ServeConfig::default()));
    if let Some(file) = file {
        anyhow::ensure!(
            file.is_file(),
            "config file {} does not exist",
            file.display()
        );
        fig = fig.merge(Toml::file_exact(file));
    }
    fig = fig
        .merge(Env::prefixed("ARTIFACTSTORE_").only(ENV_KEYS))
        .merge(Serialized::defaults(flags));
    fig.extract().context("invalid configuration")
}

impl ServeConfig {
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| artifactstore_index::sqlite_url(&self.data_dir.join("index.db")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn layers_apply_in_order_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\n",
            )?;
            jail.set_env("ARTIFACTSTORE_DATA_DIR", "/from/env");
            jail.set_env("ARTIFACTSTORE_URL", "http://ignored-by-serve");
            let flags = ServeFlags {
                max_upload_size: Some(5),
                ..Default::default()
            };
            let c = load(Some(Path::new("c.toml")), &flags).expect("loads");
            assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("/from/env"));
            assert_eq!(c.max_upload_size, 5);
            let flags = ServeFlags {
                data_dir: Some("/from/flag".into()),
                ..Default::default()
            };
            assert_eq!(
                load(Some(Path::new("c.toml")), &flags).unwrap().data_dir,
                PathBuf::from("/from/flag")
            );

            jail.create_file("bad.toml", "listen = \"127.0.0.1:9000\"\nlisten_port = 5\n")?;
            let err = format!(
                "{:#}",
                load(Some(Path::new("bad.toml")), &ServeFlags::default()).unwrap_err()
            );
            assert!(err.contains("listen_port"), "{err}");
            Ok(())
        });
    }
}
