//! `artifactstore audit verify|head` (the artifact server's log) and `artifactstore
//! vend audit verify|head` (vend's): one format, one verifier; they differ only in
//! which configuration `--config` reads.
//!
//! Exit codes of `verify`: 0 when the chain is intact and authenticated under the
//! chain key; 5 at the first break (naming file and line); 1 when the structure is
//! intact but no chain key was found, so the chain is not authenticated (anyone can
//! write a structurally sound chain); 2 when the key or config cannot be read.

use std::path::{Path, PathBuf};

use artifactstore_audit::{self as audit, AuditError, ChainKey};
use artifactstore_model::secret::SecretRef;
use clap::Subcommand;
use serde_json::json;

use crate::exit::{self, fail};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's keyed chain: every line's MAC under the chain key, the
    /// genesis line, `seq` and `prev`. Exit 5 at the first broken line, 1 when no key
    /// was found (structure checked, not authenticated), 0 when intact.
    Verify {
        /// The log's files, oldest first (a file moved aside at a key change, then the log).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The chain key (`env:NAME` or `file:/path`). Default: the key of --config,
        /// else the key file generated beside FILE (`FILE.chain-key`).
        #[arg(long, value_name = "REF")]
        key_ref: Option<String>,
        /// The server's configuration whose chain key to use (`[audit] chain_key_ref`,
        /// or the key generated beside the log): `serve`'s for `audit`, vend's for
        /// `vend audit`.
        #[arg(long, value_name = "FILE", conflicts_with = "key_ref")]
        config: Option<PathBuf>,
        /// With `audit --config`: the data directory `serve` ran with, when not in the
        /// file (its `--data-dir`; `ARTIFACTSTORE_DATA_DIR` is read too).
        #[arg(long, value_name = "DIR", requires = "config")]
        data_dir: Option<PathBuf>,
        /// A head kept elsewhere earlier (`audit head`): unless some line's MAC
        /// is this, lines were cut from the end.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
    /// Print the head of an audit log (the MAC of its last line), to keep elsewhere.
    Head {
        /// The audit log.
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        /// The server's configuration whose audit log to read.
        #[arg(long, value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
        /// With `audit --config`: the data directory `serve` ran with, when not in the
        /// file.
        #[arg(long, value_name = "DIR", requires = "config")]
        data_dir: Option<PathBuf>,
    },
}

/// Whose log a command reads: which configuration `--config` names.
#[derive(Clone, Copy)]
pub enum Service {
    Serve,
    Vend,
}

/// Where a configuration puts its log, and the chain key it names.
struct Configured {
    path: PathBuf,
    chain_key_ref: Option<SecretRef>,
}

fn load_config(
    service: Service,
    path: &Path,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Configured> {
    match service {
        Service::Vend => {
            if data_dir.is_some() {
                return Err(fail(
                    exit::USAGE,
                    "--data-dir is for the artifact server's log (`audit`), not vend's",
                ));
            }
            let c = artifactstore_vend::VendConfig::load(path)
                .map_err(|e| fail(exit::USAGE, e.to_string()))?;
            Ok(Configured {
                path: c.audit.path,
                chain_key_ref: c.audit.chain_key_ref,
            })
        }
        Service::Serve => {
            let flags = crate::config::ServeFlags {
                data_dir,
                ..Default::default()
            };
            let c = crate::config::load(Some(path), &flags)
                .map_err(|e| fail(exit::USAGE, format!("{e:#}")))?;
            let path = c.audit_path().ok_or_else(|| {
                fail(
                    exit::USAGE,
                    "this configuration does not audit ([audit] is off)",
                )
            })?;
            Ok(Configured {
                path,
                chain_key_ref: c.audit.chain_key_ref,
            })
        }
    }
}

pub fn audit(command: AuditCommand, service: Service, json_out: bool) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Verify {
            files,
            key_ref,
            config,
            data_dir,
            expect_head,
        } => {
            let config = config
                .map(|c| load_config(service, &c, data_dir))
                .transpose()?;
            verify(&files, key_ref, config, expect_head, json_out)
        }
        AuditCommand::Head {
            file,
            config,
            data_dir,
        } => {
            let file = match (file, config) {
                (Some(file), _) => file,
                (None, Some(config)) => load_config(service, &config, data_dir)?.path,
                (None, None) => return Err(fail(exit::USAGE, "give FILE or --config")),
            };
            head(&file, json_out)
        }
    }
}

/// The chain key to verify with, and where it came from (for the report; never the
/// key itself): `--key-ref`, else `--config`'s, else a key file generated beside one of
/// the files. `None` when there is none: the structure can still be checked.
fn chain_key(
    files: &[PathBuf],
    key_ref: Option<String>,
    config: Option<Configured>,
) -> anyhow::Result<Option<(ChainKey, String)>> {
    let key_error = |e: audit::KeyError| fail(exit::USAGE, e.to_string());
    let mut warnings = Vec::new();
    let found = if let Some(r) = key_ref {
        let r = SecretRef::parse(&r).map_err(|e| fail(exit::USAGE, format!("--key-ref: {e}")))?;
        Some((ChainKey::from_ref(&r, &mut warnings).map_err(key_error)?, r))
    } else if let Some(Configured {
        chain_key_ref: Some(r),
        ..
    }) = config
    {
        Some((ChainKey::from_ref(&r, &mut warnings).map_err(key_error)?, r))
    } else if let Some(found) = config
        .map(|c| generated_key(&audit::default_key_path(&c.path), &mut warnings))
        .transpose()?
        .flatten()
    {
        Some(found)
    } else {
        let mut found = None;
        for file in files.iter().rev() {
            found = generated_key(&audit::default_key_path(file), &mut warnings)?;
            if found.is_some() {
                break;
            }
        }
        found
    };
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(found.map(|(key, r)| (key, r.to_string())))
}

/// The key in a generated key file, if there is one. Never generates: verifying reads
/// only.
fn generated_key(
    path: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<(ChainKey, SecretRef)>> {
    if !path.exists() {
        return Ok(None);
    }
    let r = SecretRef::File(path.to_owned());
    let key = ChainKey::from_ref(&r, warnings).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    Ok(Some((key, r)))
}

fn io_failure(e: &AuditError) -> u8 {
    match e {
        AuditError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            exit::NOT_FOUND
        }
        _ => exit::FAILURE,
    }
}

fn verify(
    files: &[PathBuf],
    key_ref: Option<String>,
    config: Option<Configured>,
    expect_head: Option<String>,
    json_out: bool,
) -> anyhow::Result<u8> {
    if let Some(h) = &expect_head
        && !audit::is_head(h)
    {
        return Err(fail(
            exit::USAGE,
            "--expect-head: a head is 64 lower-case hex digits (as `audit head` prints it)",
        ));
    }
    let key = chain_key(files, key_ref, config)?;
    let report = match audit::verify(files, key.as_ref().map(|(k, _)| k), expect_head.as_deref()) {
        Ok(report) => report,
        Err(AuditError::Corrupt {
            path,
            line,
            message,
        }) => {
            if json_out {
                println!(
                    "{}",
                    json!({"ok": false, "file": path, "line": line, "message": message})
                );
            } else {
                println!("BROKEN at line {line} of {}: {message}", path.display());
            }
            return Ok(exit::INTEGRITY);
        }
        Err(e) => return Err(fail(io_failure(&e), e.to_string())),
    };
    let source = key.as_ref().map(|(_, from)| from.as_str());
    if json_out {
        println!(
            "{}",
            json!({
                "ok": report.authenticated,
                "authenticated": report.authenticated,
                "key_from": source,
                "files": report.files,
                "lines": report.lines,
                "head": report.head,
                "key_id": report.key_id,
                "previous_head": report.previous_head,
                "lines_after_expected_head": report.lines_after_expected_head,
            })
        );
    } else if let Some(source) = source {
        println!(
            "ok: {} lines in {} file(s), chain intact and authenticated under key id {} ({source}); head {}",
            report.lines, report.files, report.key_id, report.head
        );
        if let Some(after) = report.lines_after_expected_head {
            println!("the expected head was found; {after} line(s) were appended after it");
        }
        // A first file that continues an earlier one: what came before is not checked
        // here, and a log emptied while the server ran looks just like this.
        if report.previous_head != audit::GENESIS {
            println!(
                "note: the first file continues an earlier one whose head was {}; give the earlier files too (oldest first) to check them, or --expect-head a head you shipped",
                report.previous_head
            );
        }
    } else {
        println!(
            "NOT AUTHENTICATED: {} lines in {} file(s), structure intact, but no chain key was found (--key-ref, --config, or {}), so anyone could have written this chain; head {}",
            report.lines,
            report.files,
            files
                .last()
                .map(|f| audit::default_key_path(f).display().to_string())
                .unwrap_or_default(),
            report.head
        );
    }
    Ok(if report.authenticated {
        0
    } else {
        exit::FAILURE
    })
}

fn head(file: &Path, json_out: bool) -> anyhow::Result<u8> {
    let head = match audit::head(file) {
        Ok(head) => head,
        Err(AuditError::Corrupt { message, .. }) => {
            return Err(fail(
                exit::INTEGRITY,
                format!("{}: {message}", file.display()),
            ));
        }
        Err(e) => return Err(fail(io_failure(&e), e.to_string())),
    };
    if head.torn_tail {
        eprintln!(
            "warning: {}: the last line is torn (a write cut short); the head is that of line seq {}",
            file.display(),
            head.seq
        );
    }
    if json_out {
        println!(
            "{}",
            json!({"file": file, "head": head.head, "seq": head.seq, "torn_tail": head.torn_tail})
        );
    } else {
        println!("{}", head.head);
    }
    Ok(0)
}
