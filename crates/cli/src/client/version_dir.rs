//! `get NS/NAME@VERSION -o DIR`: every file of a version (or those `--include` selects)
//! into a directory, several at a time. Each file is written to a temp file beside its
//! final name, checked against the manifest's digest as it is written, and renamed into
//! place only when it matches, so an interrupted run never leaves a partial file under
//! a final name. A file already there with the manifest's digest is left alone, which
//! makes a rerun fetch only what is missing or wrong.

use std::path::Component;

use artifactstore_model::api::FileEntry;
use serde::Serialize;
use tokio::io::BufWriter;

use super::glob::Glob;
use super::*;

/// What a run did with one file (`--json` lists these).
#[derive(Serialize)]
struct Fetched {
    path: String,
    digest: Digest,
    size: u64,
    /// False when the file was already present with the right digest.
    fetched: bool,
}

#[derive(Serialize)]
struct VersionDirOutput {
    namespace: String,
    name: String,
    version: String,
    files: Vec<Fetched>,
}

/// The temp file a download is written to before it is renamed to `out`: created new
/// (never through a symlink or over a file already there) under a random name beside
/// `out`, so neither a link planted in the directory, a manifest path that happens to
/// look like a temp name, nor another run writing the same directory can share it.
fn create_part(out: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("download");
    tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".artifactstore-part")
        .tempfile_in(dir)
        .with_context(|| format!("create a temp file in {}", dir.display()))
}

/// Writes a body to `out` through its temp file: hashed as it is written, synced, and
/// renamed only if it hashes to `expected`. On any failure the temp file is removed
/// and `out` is untouched. The rename replaces whatever is at `out`, a symlink
/// included, rather than writing through it.
pub(super) async fn save_verified(
    mut body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    expected: Digest,
    out: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let temp = create_part(out)?;
    let file = tokio::fs::File::from_std(
        temp.as_file()
            .try_clone()
            .with_context(|| format!("open {}", temp.path().display()))?,
    );
    let mut sink = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Hasher::new();
    while let Some(chunk) = body.try_next().await? {
        hasher.update(&chunk);
        bar.inc(chunk.len() as u64);
        sink.write_all(&chunk).await?;
    }
    sink.flush().await?;
    let actual = hasher.finish();
    if actual != expected {
        return Err(fail(
            exit::INTEGRITY,
            format!("downloaded bytes hash to {actual}, expected {expected}"),
        ));
    }
    sink.into_inner().sync_all().await?;
    // Dropping `temp` on any error above removes it.
    temp.persist(out)
        .map_err(|e| e.error)
        .with_context(|| format!("rename a temp file to {}", out.display()))?;
    Ok(())
}

/// Where a manifest path goes under `dir`. The server checks paths, but a client
/// writing into the user's directory does not rely on it: only plain segments are
/// taken, never a root, `.`, `..`, an empty segment or a backslash.
fn local_path(dir: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let refuse = || {
        fail(
            exit::FAILURE,
            format!(
                "the server listed {path:?}, which is not a plain relative path; nothing is written outside {}",
                dir.display()
            ),
        )
    };
    let mut out = dir.to_path_buf();
    for segment in path.split('/') {
        if segment.contains(['\\', '\0']) {
            return Err(refuse());
        }
        let mut parts = Path::new(segment).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(s)), None) if s == segment => out.push(segment),
            _ => return Err(refuse()),
        }
    }
    Ok(out)
}

/// Refuses, before anything is written, two files whose paths differ only in case: on
/// a case-insensitive file system they would be one file.
fn refuse_case_collisions(wanted: &[(FileEntry, PathBuf)]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashMap::new();
    for (f, _) in wanted {
        if let Some(other) = seen.insert(f.path.to_lowercase(), &f.path) {
            return Err(fail(
                exit::FAILURE,
                format!(
                    "the version holds {other:?} and {:?}, which differ only in case; nothing is written",
                    f.path
                ),
            ));
        }
    }
    Ok(())
}

/// Makes the directories between `dir` and the file at `path` (a checked manifest
/// path) one at a time, refusing any that is a symlink: a link already inside `dir`
/// (to `~/.ssh`, say) would otherwise take the file outside it.
async fn create_parents(dir: &Path, path: &str) -> anyhow::Result<()> {
    let mut at = dir.to_path_buf();
    let Some((parents, _file)) = path.rsplit_once('/') else {
        return Ok(());
    };
    for segment in parents.split('/') {
        at.push(segment);
        let meta = match tokio::fs::symlink_metadata(&at).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match tokio::fs::create_dir(&at).await {
                    // Another file of the version may have made it just now.
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(e).with_context(|| format!("create {}", at.display()));
                    }
                    _ => {}
                }
                tokio::fs::symlink_metadata(&at).await
            }
            found => found,
        }
        .with_context(|| format!("inspect {}", at.display()))?;
        if meta.file_type().is_symlink() {
            return Err(fail(
                exit::FAILURE,
                format!(
                    "{} is a symlink; {path:?} is not written through it",
                    at.display()
                ),
            ));
        }
        if !meta.is_dir() {
            return Err(fail(
                exit::FAILURE,
                format!(
                    "{} is not a directory; {path:?} is not written",
                    at.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `local` is a regular file holding exactly `f`'s bytes.
async fn already_present(local: &Path, f: &FileEntry) -> anyhow::Result<bool> {
    match tokio::fs::symlink_metadata(local).await {
        Ok(meta) if meta.is_file() && meta.len() == f.size => {
            let path = local.to_owned();
            let hashed =
                tokio::task::spawn_blocking(move || artifactstore_blob::rehash_file(&path)).await?;
            Ok(hashed.is_ok_and(|(digest, _)| digest == f.digest))
        }
        _ => Ok(false),
    }
}

impl Client {
    pub(super) async fn get_version_into(
        &self,
        ns: &str,
        name: &str,
        version: &str,
        dir: &Path,
        jobs: usize,
        includes: &[String],
    ) -> anyhow::Result<u8> {
        let globs: Vec<Glob> = includes.iter().map(|g| Glob::new(g)).collect();
        let m = self.manifest_all(ns, name, version).await?;
        // Every file from the version the manifest resolved (`latest` can move).
        let exact = m.version.version.clone();
        let mut wanted = Vec::new();
        for f in m.files {
            if globs.is_empty() || globs.iter().any(|g| g.matches(&f.path)) {
                let local = local_path(dir, &f.path)?;
                wanted.push((f, local));
            }
        }
        refuse_case_collisions(&wanted)?;
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("create {}", dir.display()))?;
        let multi = MultiProgress::new();
        let results: Vec<anyhow::Result<Fetched>> = futures::stream::iter(wanted)
            .map(|(f, local)| {
                let (exact, multi) = (&exact, &multi);
                async move {
                    let fetched = self
                        .fetch_into(ns, name, exact, &f, dir, &local, multi)
                        .await
                        .with_context(|| f.path.clone())?;
                    Ok(Fetched {
                        path: f.path,
                        digest: f.digest,
                        size: f.size,
                        fetched,
                    })
                }
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
        let mut files = Vec::new();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(f) => {
                    if !self.json {
                        let verb = if f.fetched { "fetched" } else { "unchanged" };
                        println!("{verb} {} {} {} bytes", f.path, f.digest, f.size);
                    }
                    files.push(f);
                }
                Err(e) => {
                    eprintln!("artifactstore: {e:#}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e.context(format!(
                "some files of {ns}/{name}@{exact} were not fetched; run again to fetch only those"
            )));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if self.json {
            let out = VersionDirOutput {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                version: exact,
                files,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Ok(0)
    }

    /// Fetches one file unless it is already present; true if it was fetched.
    // The version's coordinates, the file, its place and the progress display: bundling
    // them into a struct would only move the same eight names.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_into(
        &self,
        ns: &str,
        name: &str,
        version: &str,
        f: &FileEntry,
        dir: &Path,
        local: &Path,
        multi: &MultiProgress,
    ) -> anyhow::Result<bool> {
        create_parents(dir, &f.path).await?;
        if already_present(local, f).await? {
            return Ok(false);
        }
        let url = self.url(&["v1", "artifacts", ns, name, version, &f.path]);
        // The manifest's digest is what the file must hash to, wherever it comes from.
        let resp = self.download(url).await?.resp;
        let bar = self.bar(multi, f.size, &f.path);
        let saved = save_verified(resp.bytes_stream(), f.digest, local, &bar).await;
        bar.finish_and_clear();
        saved.map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_written() {
        let dir = Path::new("/tmp/out");
        assert_eq!(
            local_path(dir, "a/b c/é.txt").unwrap(),
            dir.join("a").join("b c").join("é.txt")
        );
        assert_eq!(local_path(dir, "..a/b..").unwrap(), dir.join("..a/b.."));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "",
            ".",
            "a\\b",
            "a\0b",
        ] {
            assert!(local_path(dir, bad).is_err(), "{bad:?}");
        }
    }
}
