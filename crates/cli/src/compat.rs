//! `artifactstore storage compat`: a feature matrix of the configured S3 endpoint, read
//! with the same configuration `serve` reads.

use std::path::PathBuf;

use artifactstore_blob::s3::compat::{self, CompatOptions};

use crate::config::{self, Backend, ServeFlags};
use crate::exit::{self, fail};
use crate::store::{s3_config, s3_credentials};

#[derive(clap::Args)]
pub struct CompatArgs {
    /// TOML config file (its [s3] section; keys as in docs/CONFIG.md).
    #[arg(long, env = "ARTIFACTSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Blob backend: only `s3` has anything to probe [env: ARTIFACTSTORE_BACKEND].
    #[arg(long, value_enum)]
    backend: Option<config::Backend>,
    /// Print the matrix as a Markdown table (no timings), e.g. for docs.
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
    /// Print the report as JSON (also the global --json).
    #[arg(long)]
    json: bool,
    /// STS endpoint to probe [default: s3.sts_endpoint_url, if set].
    #[arg(long, env = "ARTIFACTSTORE_COMPAT_STS_ENDPOINT", value_name = "URL")]
    sts_endpoint: Option<String>,
    /// A role the credentials may assume, for temporary credentials that show whether
    /// the store enforces session tokens.
    #[arg(long, env = "ARTIFACTSTORE_COMPAT_ROLE_ARN", value_name = "ARN")]
    role_arn: Option<String>,
    /// The store's virtual-host domain, when the endpoint is an IP address:
    /// `<bucket>.<domain>` is sent to the endpoint's address.
    #[arg(
        long,
        env = "ARTIFACTSTORE_COMPAT_VIRTUAL_HOST_DOMAIN",
        value_name = "DOMAIN"
    )]
    virtual_host_domain: Option<String>,
}

/// Exit 0 when the report ran, whatever it found; `storage verify` is the gate.
pub async fn compat(args: CompatArgs, json: bool) -> anyhow::Result<u8> {
    let flags = ServeFlags {
        backend: args.backend,
        ..Default::default()
    };
    let cfg = config::load(args.config.as_deref(), &flags)
        .map_err(|e| fail(exit::USAGE, format!("{e:#}")))?;
    if cfg.backend != Backend::S3 {
        return Err(fail(
            exit::USAGE,
            "storage compat probes an S3 endpoint: use --backend s3 (or ARTIFACTSTORE_BACKEND=s3)",
        ));
    }
    let s3 = s3_config(&cfg.s3)?;
    let (cache, _) = s3_credentials(&cfg.s3)?;
    let credential = cache
        .get()
        .await
        .map_err(|e| fail(exit::FAILURE, e.to_string()))?;
    let options = CompatOptions {
        sts_endpoint: args
            .sts_endpoint
            .or_else(|| cfg.s3.sts_endpoint_url.clone()),
        role_arn: args.role_arn,
        virtual_host_domain: args.virtual_host_domain,
    };
    let report = compat::run(&s3, credential, options, signalled())
        .await
        .map_err(|e| fail(exit::FAILURE, e.to_string()))?;
    if json || args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.markdown {
        print!("{}", report.markdown());
    } else {
        print!("{}", report.text());
    }
    if !report.cleanup.problems.is_empty() {
        eprintln!(
            "warning: not everything under {} was removed: {}",
            report.scratch_prefix,
            report.cleanup.problems.join("; ")
        );
    }
    if let Some(why) = &report.cleanup.unconfirmed {
        eprintln!(
            "warning: every key written under {} was deleted, but the prefix could not be \
             listed to confirm that nothing else is left: {why}",
            report.scratch_prefix
        );
    }
    if report.interrupted {
        eprintln!(
            "interrupted: {} of the features were probed; what was written is removed",
            report.rows.len()
        );
        return Ok(exit::INTERRUPTED);
    }
    Ok(0)
}

/// SIGINT or SIGTERM: the probes stop, and the cleanup runs before the process exits.
async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
