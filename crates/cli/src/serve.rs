//! `artifactstore serve` and `artifactstore fsck`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use artifactstore_blob::FsBlobStore;
use artifactstore_index::Index;
use artifactstore_server::{AppState, ServiceConfig};

use crate::config::{self, LogFormat, ServeConfig, ServeFlags};
use crate::exit::{self, fail};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address and port to listen on [default: 127.0.0.1:8480; env: ARTIFACTSTORE_LISTEN].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Metadata database URL [default: SQLite in the data directory; env: ARTIFACTSTORE_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Largest accepted upload in bytes [default: 64 GiB; env: ARTIFACTSTORE_MAX_UPLOAD_SIZE].
    #[arg(long, value_name = "BYTES")]
    max_upload_size: Option<u64>,
    /// Allow a non-loopback listen address without authentication [env: ARTIFACTSTORE_INSECURE_NO_AUTH].
    #[arg(long)]
    insecure_no_auth: bool,
    /// Log format on stderr [env: ARTIFACTSTORE_LOG_FORMAT].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Serve HTTPS with this PEM certificate chain, reread when it changes (with --tls-key) [env: ARTIFACTSTORE_TLS_CERT].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert [env: ARTIFACTSTORE_TLS_KEY].
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Delete a blob once no live version has referenced it for this long [default: 3600; env: ARTIFACTSTORE_GC_GRACE_SECS].
    #[arg(long, value_name = "SECS")]
    gc_grace_secs: Option<u64>,
    /// Collect unreferenced blobs this often; 0: only when asked [default: 3600; env: ARTIFACTSTORE_GC_INTERVAL_SECS].
    #[arg(long, value_name = "SECS")]
    gc_interval_secs: Option<u64>,
    /// Do not serve the artifact browser at /ui/ [env: ARTIFACTSTORE_UI=false].
    #[arg(long)]
    no_ui: bool,
}

/// Where the store is: shared by `serve` and `storage verify`.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// TOML config file (keys as in docs/CONFIG.md).
    #[arg(long, env = "ARTIFACTSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Blob backend [default: fs; env: ARTIFACTSTORE_BACKEND].
    #[arg(long, value_enum)]
    pub backend: Option<config::Backend>,
    /// Data directory [default: ./artifactstore-data; env: ARTIFACTSTORE_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // Only the servers log: this is where both start, so they raise the limit here.
    crate::raise_open_file_limit();
}

/// Holds an exclusive lock on the data directory for the life of the server: two
/// servers on one directory would delete each other's temp files.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create data directory {}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(fail(
            exit::USAGE,
            format!(
                "{} is in use by another artifactstore process",
                dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("lock {}", path.display()))
        }
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let flags = ServeFlags {
        backend: args.store.backend,
        listen: args.listen,
        data_dir: args.store.data_dir,
        database_url: args.database_url,
        max_upload_size: args.max_upload_size,
        insecure_no_auth: args.insecure_no_auth,
        log_format: args.log_format,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        gc_grace_secs: args.gc_grace_secs,
        gc_interval_secs: args.gc_interval_secs,
        ui: args.no_ui.then_some(false),
    };
    let cfg: ServeConfig = config::load(args.store.config.as_deref(), &flags)
        .map_err(|e| fail(exit::USAGE, format!("{e:#}")))?;
    init_logs(cfg.log_format);

    if !cfg.listen.ip().is_loopback() && cfg.auth.is_none() {
        if !cfg.insecure_no_auth {
            return Err(fail(
                exit::USAGE,
                format!(
                    "refusing to listen on non-loopback {} without authentication: configure [auth] \
                     (docs/AUTH.md), or pass --insecure-no-auth (ARTIFACTSTORE_INSECURE_NO_AUTH=true) to do it anyway",
                    cfg.listen
                ),
            ));
        }
        tracing::warn!(listen = %cfg.listen, "listening on a non-loopback address WITHOUT authentication: anyone who can reach it can read and write artifacts");
    }
    let auth = auth(&cfg)?;
    let retention = artifactstore_server::retention::Retention::new(&cfg.retention)
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let quotas = artifactstore_server::quota::Quotas::new(&cfg.quota)
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;

    let limits = listener_limits(&cfg)?;
    if !cfg.listen.ip().is_loopback() && limits.tls().is_none() {
        tracing::warn!(listen = %cfg.listen, "listening on a non-loopback address over plain HTTP: bearer tokens would travel in plain text; set tls_cert and tls_key");
    }

    let _lock = lock_data_dir(&cfg.data_dir)?;
    let blobs = crate::store::open_for_serving(&cfg).await?;
    let index = Index::open(&cfg.database_url())
        .await
        .context("open metadata index")?;
    index.set_max_files_per_version(cfg.max_files_per_version);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        data_dir = %cfg.data_dir.display(),
        database = index.backend(),
        backend = ?cfg.backend,
        downloads = ?cfg.downloads(),
        "artifactstore serving"
    );
    if cfg.backend != config::Backend::S3 && cfg.s3.download == config::S3Download::Redirect {
        tracing::warn!(
            "s3.download = \"redirect\" applies to the s3 backend only: downloads are streamed"
        );
    }
    // The one line on stdout: scripts (and tests on port 0) read the address from it.
    let shutdown = shutdown_signal();
    println!("artifactstore listening on {}://{addr}", limits.scheme());

    let mut state = AppState::new(
        blobs.blob_store(),
        Arc::new(index),
        ServiceConfig {
            max_upload_size: cfg.max_upload_size,
            origins: origins(&cfg, addr),
            body_idle_timeout: std::time::Duration::from_secs(cfg.body_idle_timeout_secs),
            max_concurrent_uploads: cfg.max_concurrent_uploads,
            retention,
            quotas,
            downloads: cfg.downloads(),
            ui: cfg.ui,
            retention_interval: (cfg.retention_interval_secs > 0)
                .then(|| std::time::Duration::from_secs(cfg.retention_interval_secs)),
            gc: artifactstore_server::gc::GcConfig {
                grace: std::time::Duration::from_secs(cfg.gc_grace_secs),
                interval: (cfg.gc_interval_secs > 0)
                    .then(|| std::time::Duration::from_secs(cfg.gc_interval_secs)),
            },
            ..ServiceConfig::default()
        },
    );
    state = state.with_auth(auth);
    let audit = open_audit(&cfg)?;
    let mut sweeper = None;
    if let Some(audit) = &audit {
        state = state.with_audit(audit.clone());
        let sweeping = audit.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                // A round of summaries, once begun, is written through.
                tokio::select! {
                    _ = tick.tick() => sweeping.write_summaries(false).await,
                    _ = &mut stopped => break,
                }
            }
        });
        sweeper = Some((stop, task));
    } else if cfg.auth.is_some() {
        tracing::warn!("[auth] is on but [audit] is off: changes and refusals are not audited");
    }
    if let Some(verifier) = state.auth.verifier_handle() {
        tokio::spawn(async move { verifier.keep_keys_fresh().await });
    }
    if let crate::store::Opened::S3(_, cache) = &blobs {
        state = state.with_probe(Arc::new(crate::store::CredentialProbe(cache.clone())));
    }
    tokio::spawn(artifactstore_server::gc::keep_collecting(state.clone()));
    tokio::spawn(artifactstore_server::retention::keep_expiring(
        state.clone(),
    ));
    let index = state.index.clone();
    artifactstore_server::run(listener, state, limits, shutdown).await;
    if let Some(audit) = audit {
        // The sweeper first, so that no summary it has taken is lost with it.
        if let Some((stop, task)) = sweeper {
            let _ = stop.send(());
            let _ = task.await;
        }
        audit.write_summaries(true).await;
    }
    index.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called,
/// not when the future is first polled: call it before announcing the address, so that
/// a signal sent as soon as the server says it listens is a graceful stop, not the
/// default death by signal.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing requests in flight");
    }
}

/// Where `fsck --backend s3` finds the store and its index.
pub struct StoreOf {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub config: Option<PathBuf>,
}

/// `fsck --backend s3`: checks the bucket against the index, read-only.
pub async fn fsck_s3(of: StoreOf, deep: bool, json: bool) -> anyhow::Result<u8> {
    let flags = ServeFlags {
        backend: Some(config::Backend::S3),
        data_dir: Some(of.data_dir),
        database_url: of.database_url,
        ..Default::default()
    };
    let cfg = config::load(of.config.as_deref(), &flags)
        .map_err(|e| fail(exit::USAGE, format!("{e:#}")))?;
    let (store, mut info, cache) = crate::store::s3_store(&cfg.s3)?;
    info.load_expiry(&cache)
        .await
        .context("S3 backend: no credentials")?;
    store.head_bucket().await.context("S3 backend not usable")?;
    let index = Index::open(&cfg.database_url())
        .await
        .context("open metadata index")?;
    let report = artifactstore_server::fsck::fsck_store(&store, &index, deep).await?;
    index.close().await;
    print_fsck(&report, json)
}

pub async fn fsck(
    data_dir: &Path,
    database_url: Option<String>,
    repair: bool,
    json: bool,
) -> anyhow::Result<u8> {
    anyhow::ensure!(
        data_dir.is_dir(),
        "data directory {} does not exist",
        data_dir.display()
    );
    // Repair moves files; it must not race a running server.
    let _lock = if repair {
        Some(lock_data_dir(data_dir)?)
    } else {
        None
    };
    let store = Arc::new(FsBlobStore::open(data_dir)?);
    let url =
        database_url.unwrap_or_else(|| artifactstore_index::sqlite_url(&data_dir.join("index.db")));
    let index = Index::open(&url).await.context("open metadata index")?;
    let report = artifactstore_server::fsck::fsck(&store, &index, repair).await?;
    index.close().await;
    print_fsck(&report, json)
}

fn print_fsck(report: &artifactstore_server::fsck::FsckReport, json: bool) -> anyhow::Result<u8> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "checked {} blobs ({} bytes); {} referenced, {} unreferenced, {} temp files",
            report.blobs_checked,
            report.bytes_checked,
            report.referenced_blobs,
            report.unreferenced_blobs,
            report.temp_files
        );
        for p in &report.problems {
            println!("PROBLEM {} {}: {}", p.kind, p.digest, p.detail);
            for f in &p.files {
                println!("    referenced by {f}");
            }
            if let Some(a) = &p.action {
                println!("    {a}");
            }
        }
        if report.is_clean() {
            println!("clean");
        }
    }
    Ok(if report.is_clean() {
        0
    } else {
        exit::INTEGRITY
    })
}

/// `[audit]`, opened; `None` when auditing is off.
fn open_audit(
    cfg: &ServeConfig,
) -> anyhow::Result<Option<Arc<artifactstore_server::audit::ApiAudit>>> {
    let Some(path) = cfg.audit_path() else {
        return Ok(None);
    };
    let audit = artifactstore_server::audit::ApiAudit::open(
        &path,
        cfg.audit.chain_key_ref.as_ref(),
        std::time::Duration::from_secs(cfg.audit.window_secs),
        cfg.audit.max_tracked,
        artifactstore_model::clock::system_clock(),
    )
    .map_err(|e| fail(exit::USAGE, format!("[audit]: {e}")))?;
    tracing::info!(path = %path.display(), "auditing every change and refusal");
    Ok(Some(Arc::new(audit)))
}

/// `[auth]`, checked; off without it.
fn auth(cfg: &ServeConfig) -> anyhow::Result<artifactstore_server::auth::Auth> {
    use artifactstore_server::auth::Auth;
    let Some(config) = &cfg.auth else {
        return Ok(Auth::off());
    };
    for issuer in config.issuers.iter().filter(|i| i.allow_insecure_http) {
        tracing::warn!(issuer = %issuer.issuer, "allow_insecure_http is on: this issuer's keys may be fetched over plain HTTP, where anyone on the path can replace them");
    }
    let http =
        artifactstore_oidc::verify::http_client().context("HTTP client for token issuers")?;
    let auth = Auth::new(config, http, artifactstore_model::clock::system_clock())
        .map_err(|e| fail(exit::USAGE, format!("[auth]: {e}")))?;
    tracing::info!(
        issuers = config.issuers.len(),
        rules = config.rules.len(),
        tokens = config.tokens.len(),
        anonymous = !config.anonymous.is_empty(),
        "authentication on: every /v1/ request is checked against [auth]"
    );
    Ok(auth)
}

/// The listener's limits, with TLS when the configuration names a certificate.
fn listener_limits(cfg: &ServeConfig) -> anyhow::Result<artifactstore_server::Limits> {
    let limits = cfg.listener_limits()?;
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(limits);
    };
    limits
        .with_tls(cert, key)
        .map_err(|e| fail(exit::USAGE, format!("tls_cert/tls_key: {e}")))
}

/// The `Host` and `Origin` values this server answers.
fn origins(cfg: &ServeConfig, addr: std::net::SocketAddr) -> artifactstore_server::guard::Origins {
    artifactstore_server::guard::Origins::configured(
        addr,
        cfg.allowed_hosts.as_deref(),
        &cfg.cors_allowed_origins,
    )
}
