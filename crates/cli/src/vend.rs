//! `artifactstore vend ...` (the credential vending service and its tools) and
//! `artifactstore creds process` (a credential_process helper).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
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
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct RevokeArgs {
    /// Base URL of the vending service.
    #[arg(long, env = "ARTIFACTSTORE_VEND_URL")]
    vend_url: String,
    /// File holding the admin token ([admin] token_ref of the service).
    #[arg(long, env = "ARTIFACTSTORE_VEND_ADMIN_TOKEN_FILE")]
    admin_token_file: PathBuf,
    #[arg(long, conflicts_with_all = ["subject", "role"])]
    lease: Option<String>,
    /// A subject (`sub`); needs --issuer.
    #[arg(long, requires = "issuer", conflicts_with = "role")]
    subject: Option<String>,
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    role: Option<String>,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// Record a revocation of a role or issuer the service does not know.
    #[arg(long)]
    force: bool,
}

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
        VendCommand::Revoke(args) => revoke(args, json_out).await,
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
    let reaper = Duration::from_secs(config.reaper.interval_secs.max(1));
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

async fn revoke(args: RevokeArgs, json_out: bool) -> anyhow::Result<u8> {
    let token = read_secret_file(&args.admin_token_file, "admin token file")?;
    let mut body = match (&args.lease, &args.subject, &args.role) {
        (Some(id), None, None) => json!({"kind": "lease", "id": id}),
        (None, Some(subject), None) => {
            json!({"kind": "subject", "issuer": args.issuer, "subject": subject})
        }
        (None, None, Some(role)) => json!({"kind": "role", "role": role}),
        _ => {
            return Err(fail(
                exit::USAGE,
                "give one of --lease, --subject (with --issuer) or --role",
            ));
        }
    };
    body["reason"] = json!(args.reason);
    body["force"] = json!(args.force);
    let url = format!(
        "{}/v1/admin/revocations",
        args.vend_url.trim_end_matches('/')
    );
    let resp = http()?
        .post(&url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .map_err(|e| fail(exit::UNREACHABLE, format!("{url}: {e}")))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(fail(exit::FAILURE, error_message(status, &answer)));
    }
    if json_out {
        println!("{answer}");
    } else {
        let leases = answer["leases"].as_array().cloned().unwrap_or_default();
        println!(
            "revoked {} lease(s){}",
            answer["ended"].as_u64().unwrap_or(leases.len() as u64),
            match answer["failed"].as_u64() {
                Some(n) if n > 0 => format!(", {n} failed upstream (still live; retried)"),
                _ => String::new(),
            }
        );
        for l in &leases {
            println!(
                "  {}  upstream: {}{}",
                l["lease_id"].as_str().unwrap_or(""),
                l["upstream"].as_str().unwrap_or(""),
                l["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        if answer["standing"].as_bool() == Some(true) {
            println!("future vending is refused until the revocation is lifted");
        }
    }
    let failed = answer["leases"]
        .as_array()
        .is_some_and(|l| l.iter().any(|l| l["upstream"] == "error"));
    Ok(if failed { exit::FAILURE } else { 0 })
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
    let resp = http()?
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"role": role, "duration_seconds": duration_seconds}))
        .send()
        .await
        .map_err(|e| {
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
    if !status.is_success() {
        return Err(fail(exit::FAILURE, error_message(status, &answer)));
    }
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
