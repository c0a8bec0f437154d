//! What the client commands print: the per-file lines and the `--json` documents.

use serde::Serialize;

use artifactstore_model::api::{Event, Manifest, PutResult, VersionInfo};
use artifactstore_model::{Digest, Timestamp};

/// One line of `events` output.
pub(super) fn event_line(e: &Event) -> String {
    let mut line = format!(
        "{:>8} \"{}\" {:<17} {}/{}@{}",
        e.seq,
        e.at,
        e.kind.as_str(),
        e.namespace,
        e.name,
        e.version
    );
    if let Some(p) = &e.path {
        let digest = e.digest.map(|d| d.to_string()).unwrap_or_default();
        line.push_str(&format!("/{p} {digest} {} bytes", e.size.unwrap_or(0)));
    }
    line
}

/// What `put` reports per file: the server's answer, or the local facts of a file the
/// server already held with the same bytes (then nothing was sent).
#[derive(Serialize)]
pub(super) struct Uploaded {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) version: String,
    pub(super) path: String,
    pub(super) digest: Digest,
    pub(super) size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) created_at: Option<Timestamp>,
    pub(super) created: bool,
}

impl From<PutResult> for Uploaded {
    fn from(p: PutResult) -> Self {
        Uploaded {
            namespace: p.namespace,
            name: p.name,
            version: p.version,
            path: p.file.path,
            digest: p.file.digest,
            size: p.file.size,
            media_type: Some(p.file.media_type),
            created_at: Some(p.file.created_at),
            created: p.created,
        }
    }
}

/// `put --json`.
#[derive(Serialize)]
pub(super) struct PutOutput {
    pub(super) files: Vec<Uploaded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<VersionOutput>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum VersionOutput {
    Manifest(Manifest),
    Info(VersionInfo),
}
