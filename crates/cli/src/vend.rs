//! `artifactstore vend ...` (the credential vending service and its tools) and
//! `artifactstore creds process` (a credential_process helper).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::config::LogFormat;
use crate::exit::{self, fail};
use crate::serve::{init_logs, shutdown_signal};

pub use crate::audit::AuditCommand;

#[derive(Subcommand)]
pub enum VendCommand {
    /// Run the vending service: OIDC token in, short-lived storage credentials out.
    Serve {
        /// The vending configuration (TOML; docs/VEND.md).
        #[arg(long, env = "ARTIFACTSTORE_VEND_CONFIG")]
        config: PathBuf,
        /// Listen address, overriding the file's `listen`.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key), overriding the file's `tls_cert`.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert, overriding the file's `tls_key`.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Revoke a lease, or a subject or role (its live leases and future vending).
    Revoke(admin::RevokeArgs),
    /// Lift a standing revocation of a subject or role.
    Unrevoke(admin::UnrevokeArgs),
    /// List leases (newest first), filtered by subject, issuer, role, state, driver,
    /// expiry or break-glass.
    Leases(admin::LeasesArgs),
    /// Emergency credentials without an OIDC token: a lease on a break-glass role for
    /// the holder of the break-glass credential, audited as critical (docs/VEND.md).
    BreakGlass(break_glass::BreakGlassArgs),
    /// Print the argon2id hash of a break-glass credential read from stdin (or a
    /// prompt), for `[break_glass] credential_hash_ref`.
    HashCredential,
}

mod admin;
mod break_glass;

#[derive(Subcommand)]
pub enum CredsCommand {
    /// Print credentials in the AWS credential_process format (`Version: 1`),
    /// exchanging an OIDC token at the vending service. Nothing secret goes to stderr.
    Process {
        /// Base URL of the vending service.
        #[arg(long)]
        vend_url: String,
        /// File holding the OIDC token; read at every run.
        #[arg(long)]
        token_file: PathBuf,
        /// Role to ask for (default: the first role whose rules match the token).
        #[arg(long)]
        role: Option<String>,
        /// Lease duration in seconds (default: the role's).
        #[arg(long)]
        duration_seconds: Option<u64>,
    },
}

pub async fn vend(command: VendCommand, json_out: bool) -> anyhow::Result<u8> {
    match command {
        VendCommand::Serve {
            config,
            listen,
            log_format,
            tls_cert,
            tls_key,
        } => serve(&config, listen, log_format, tls_cert.zip(tls_key))
            .await
            .map(|()| 0),
        VendCommand::Audit(command) => {
            crate::audit::audit(command, crate::audit::Service::Vend, json_out)
        }
        VendCommand::Revoke(args) => admin::revoke(args, json_out).await,
        VendCommand::Unrevoke(args) => admin::unrevoke(args, json_out).await,
        VendCommand::Leases(args) => admin::leases(args, json_out).await,
        VendCommand::BreakGlass(args) => break_glass::break_glass(args, json_out).await,
        VendCommand::HashCredential => break_glass::hash_credential(),
    }
}

async fn serve(
    path: &Path,
    listen: Option<String>,
    log_format: LogFormat,
    tls_flags: Option<(PathBuf, PathBuf)>,
) -> anyhow::Result<()> {
    init_logs(log_format);
    let config =
        artifactstore_vend::VendConfig::load(path).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let mut limits = config
        .listener_limits()
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let tls_files = tls_flags.or_else(|| config.tls_cert.clone().zip(config.tls_key.clone()));
    if let Some((cert, key)) = tls_files {
        limits = limits
            .with_tls(&cert, &key)
            .map_err(|e| fail(exit::USAGE, format!("tls_cert/tls_key: {e}")))?;
    }
    let reaper = config.reaper.clone();
    let (service, warnings) = artifactstore_vend::build(config)
        .await
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && limits.tls().is_none() {
        tracing::warn!(%addr, "vending on a non-loopback address over plain HTTP: put TLS in front of it, tokens and credentials cross this connection");
    }
    tracing::info!(%addr, "artifactstore vend serving");
    let shutdown = shutdown_signal();
    println!(
        "artifactstore vend listening on {}://{addr}",
        limits.scheme()
    );
    let background = tokio::spawn(artifactstore_vend::background(service.clone(), reaper));
    artifactstore_vend::http::run(listener, service.clone(), limits, shutdown).await?;
    background.abort();
    // Counted refusals of windows still open get their summary line.
    service.close_all_refusal_windows().await;
    service.leases.close().await;
    Ok(())
}

fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    artifactstore_model::secret::read_trimmed_file(path)
        .map_err(|e| fail(exit::USAGE, format!("{what}: {e}")))
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(
        artifactstore_credentials::sources::http_client_builder(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()?,
    )
}

/// Sends `req` (to `url`) to the vending service: the JSON of a 2xx answer, or the
/// status and JSON of a refusal; a service that cannot be reached is the
/// `UNREACHABLE` failure.
async fn send(
    req: reqwest::RequestBuilder,
    url: &str,
) -> anyhow::Result<Result<Value, (reqwest::StatusCode, Value)>> {
    let resp = req.send().await.map_err(|e| {
        fail(
            exit::UNREACHABLE,
            format!(
                "{url}: cannot reach the vending service: {}",
                e.without_url()
            ),
        )
    })?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    Ok(if status.is_success() {
        Ok(answer)
    } else {
        Err((status, answer))
    })
}

/// A refusal of the admin or break-glass routes as the failure its status means:
/// 401 → 7, 403 → 8, 404 → 3, 400 → 2, others 1.
fn refused(status: reqwest::StatusCode, answer: &Value) -> anyhow::Error {
    let code = match status {
        reqwest::StatusCode::UNAUTHORIZED => exit::UNAUTHENTICATED,
        reqwest::StatusCode::FORBIDDEN => exit::FORBIDDEN,
        reqwest::StatusCode::NOT_FOUND => exit::NOT_FOUND,
        reqwest::StatusCode::BAD_REQUEST => exit::USAGE,
        _ => exit::FAILURE,
    };
    fail(code, error_message(status, answer))
}

/// The message of an error answer of the vending service (its messages never
/// carry a token or secret).
fn error_message(status: reqwest::StatusCode, body: &Value) -> String {
    let e = body.get("error").unwrap_or(body);
    format!(
        "vending refused (HTTP {status}): {}: {}",
        e.get("code").and_then(Value::as_str).unwrap_or("error"),
        e.get("message").and_then(Value::as_str).unwrap_or("")
    )
}

pub async fn creds(command: CredsCommand) -> anyhow::Result<u8> {
    let CredsCommand::Process {
        vend_url,
        token_file,
        role,
        duration_seconds,
    } = command;
    let token = read_secret_file(&token_file, "token file")?;
    let url = format!("{}/v1/credentials", vend_url.trim_end_matches('/'));
    let req = http()?
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"role": role, "duration_seconds": duration_seconds}));
    // credential_process: any refusal is exit 1, its reason on stderr.
    let answer = send(req, &url)
        .await?
        .map_err(|(status, answer)| fail(exit::FAILURE, error_message(status, &answer)))?;
    let field = |k: &str| answer.get(k).cloned().unwrap_or(Value::Null);
    println!(
        "{}",
        json!({
            "Version": 1,
            "AccessKeyId": field("access_key_id"),
            "SecretAccessKey": field("secret_access_key"),
            "SessionToken": field("session_token"),
            "Expiration": field("expiration"),
        })
    );
    Ok(0)
}
