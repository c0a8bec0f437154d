//! `artifactstore`: the server (`serve`), its client commands, `fsck`, `storage verify`,
//! and the credential vending service (`vend`, `creds`).
//!
//! Exit codes (also in docs/CLI.md): 0 success, 1 failure, 2 usage or configuration
//! error, 3 not found, 4 conflict, 5 integrity problem (digest mismatch, fsck findings),
//! 6 server unreachable, 7 not authenticated (401), 8 forbidden (403).

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod audit;
mod client;
mod compat;
mod config;
mod exit;
mod serve;
mod store;
mod target;
mod token_new;
mod vend;
mod verify;

#[derive(Parser)]
#[command(
    name = "artifactstore",
    version,
    about = "Immutable, content-addressed build and test artifacts"
)]
struct Cli {
    /// Server URL for client commands.
    #[arg(
        long,
        global = true,
        env = "ARTIFACTSTORE_URL",
        default_value = "http://127.0.0.1:8480"
    )]
    server: String,
    /// PEM file of CA certificates to trust for an `https://` server, besides the system's.
    #[arg(
        long,
        global = true,
        env = "ARTIFACTSTORE_CA_CERT",
        value_name = "FILE"
    )]
    ca_cert: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the artifact server.
    Serve(serve::ServeArgs),
    /// Upload files or directory trees into a version (created open on first upload).
    Put {
        /// NS/NAME@VERSION
        target: String,
        /// Files and directories; a directory uploads its tree, paths relative to it.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// Path inside the version for a single file (default: its file name).
        #[arg(long = "as", value_name = "PATH")]
        as_path: Option<String>,
        /// Complete the version after the uploads.
        #[arg(long)]
        complete: bool,
        /// Set a label (KEY=VALUE) on the version; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// With --complete: the version expires this many days later (capped by the
        /// server's retention rule).
        #[arg(long, value_name = "DAYS", requires = "complete", value_parser = clap::value_parser!(u64).range(1..=36500))]
        expires_in_days: Option<u64>,
        /// Uploads in parallel.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        #[command(flatten)]
        auth: client::TokenArgs,
    },
    /// Download a file (to stdout without -o), or every file of a version into a
    /// directory (NS/NAME@VERSION -o DIR); `@latest` works.
    Get {
        /// NS/NAME@VERSION/PATH, or NS/NAME@VERSION with -o DIR
        target: String,
        /// Write the file here (atomically, after the digest checks); for a whole
        /// version, the directory to write its files into (files already there with the
        /// right digest are kept, so a rerun fetches only what is missing or wrong).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Whole version: downloads in parallel.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Whole version: only files whose path matches GLOB (`*`, `?` within a
        /// segment, `**` across segments); repeatable.
        #[arg(long = "include", value_name = "GLOB")]
        includes: Vec<String>,
        #[command(flatten)]
        auth: client::TokenArgs,
    },
    /// Complete a version: freeze its file set and move `latest` to it.
    Complete {
        /// NS/NAME@VERSION
        target: String,
        /// Set a label (KEY=VALUE) as it completes; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The version expires this many days later (capped by the server's retention
        /// rule).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=36500))]
        expires_in_days: Option<u64>,
        #[command(flatten)]
        auth: client::TokenArgs,
    },
    /// List namespaces, names, versions or the files of a version.
    Ls {
        /// Nothing, NS, NS/NAME or NS/NAME@VERSION
        target: Option<String>,
        #[command(flatten)]
        auth: client::TokenArgs,
    },
    /// Delete a version (a tombstone; the name cannot be reused).
    Rm {
        /// NS/NAME@VERSION
        target: String,
        #[command(flatten)]
        auth: client::TokenArgs,
    },
    /// Ask the server to delete blobs no live version references (after the grace
    /// period; the `admin` permission with [auth]).
    Gc {
        /// Expire versions by the retention rules first (their blobs are then collected
        /// in the same run at zero grace, or by a later one).
        #[arg(long)]
        expire: bool,
        /// Report what would expire and what is unreferenced; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        auth: client::TokenArgs,
    },
    /// Print the event log; with --follow, wait for new events.
    Events {
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        auth: client::TokenArgs,
    },
    /// Check a local data directory: re-hash every blob, check every file has its blob.
    Fsck {
        #[arg(long, env = "ARTIFACTSTORE_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Metadata database URL (default: the SQLite index in the data directory).
        #[arg(long, env = "ARTIFACTSTORE_DATABASE_URL")]
        database_url: Option<String>,
        /// Move corrupt blobs to <data-dir>/quarantine/ (fs only).
        #[arg(long, conflicts_with = "backend")]
        repair: bool,
        /// Check the `s3` backend's bucket (from --config and ARTIFACTSTORE_S3_*)
        /// instead of the data directory.
        #[arg(long, value_enum)]
        backend: Option<config::Backend>,
        /// With --backend s3: serve's configuration file (its [s3] section).
        #[arg(long, env = "ARTIFACTSTORE_CONFIG", requires = "backend")]
        config: Option<PathBuf>,
        /// With --backend s3: read every object back and re-hash it.
        #[arg(long, requires = "backend")]
        deep: bool,
    },
    /// Check the configured storage backend.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Credential vending: OIDC tokens in, short-lived storage credentials out.
    #[command(subcommand)]
    Vend(vend::VendCommand),
    /// Credential helpers for AWS SDKs and tools.
    #[command(subcommand)]
    Creds(vend::CredsCommand),
    /// Static bearer tokens for the server's `[[auth.tokens]]`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The artifact server's audit log (`[audit]`): verify its keyed chain, print its head.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new high-entropy token (once) and the configuration lines holding its
    /// SHA-256.
    New {
        /// Who holds it: audit lines and logs name the token by this.
        #[arg(long, default_value = "token")]
        name: String,
    },
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Prove the backend works: health, round trip, ranged read, multipart, conditional
    /// create, delete and cleanup. Exit 0 only when every check passes.
    Verify(serve::StoreArgs),
    /// Probe what the S3 endpoint can do — addressing, listing, ranges, multipart,
    /// conditional writes, checksums, presigned URLs, session tokens, STS — and print a
    /// matrix, each row pass, fail, unsupported or skipped with its evidence. Exit 0
    /// when the report ran.
    Compat(compat::CompatArgs),
}

/// Raises this process's soft limit of open files to its hard limit (the servers call it
/// as they start). A server holds a descriptor per connection and per upload's temp
/// file, and the usual soft default of 1024 is spent by a few hundred stalled uploads
/// long before any limit of the server's own applies.
pub(crate) fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        let error = io::Error::last_os_error();
        tracing::debug!(%error, "could not read the open-file limit");
        return;
    }
    let soft = lim.rlim_cur;
    if soft >= lim.rlim_max {
        tracing::debug!(
            limit = soft,
            "open-file limit: the soft limit is the hard limit"
        );
        return;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        tracing::debug!(
            from = soft,
            to = lim.rlim_max,
            "raised the open-file soft limit to the hard limit"
        );
    } else {
        let error = io::Error::last_os_error();
        tracing::debug!(%error, soft, hard = lim.rlim_max, "could not raise the open-file soft limit");
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e
                .downcast_ref::<exit::Failure>()
                .map_or(exit::FAILURE, |f| f.code);
            eprintln!("artifactstore: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let client = |auth: &client::TokenArgs| {
        client::Client::new(&cli.server, cli.json, auth, cli.ca_cert.as_deref())
    };
    match cli.command {
        Command::Serve(args) => serve::serve(args).await.map(|()| 0),
        Command::Put {
            target,
            sources,
            as_path,
            complete,
            labels,
            expires_in_days,
            jobs,
            auth,
        } => {
            let publish = client::Publish {
                labels: &labels,
                expires_in_days,
            };
            client(&auth)?
                .put(
                    &target,
                    &sources,
                    as_path.as_deref(),
                    complete,
                    &publish,
                    jobs,
                )
                .await
        }
        Command::Get {
            target,
            output,
            jobs,
            includes,
            auth,
        } => {
            client(&auth)?
                .get(&target, output.as_deref(), jobs, &includes)
                .await
        }
        Command::Complete {
            target,
            labels,
            expires_in_days,
            auth,
        } => {
            let publish = client::Publish {
                labels: &labels,
                expires_in_days,
            };
            client(&auth)?.complete(&target, &publish).await
        }
        Command::Ls { target, auth } => client(&auth)?.ls(target.as_deref()).await,
        Command::Rm { target, auth } => client(&auth)?.rm(&target).await,
        Command::Gc {
            expire,
            dry_run,
            auth,
        } => client(&auth)?.gc(expire, dry_run).await,
        Command::Events {
            after,
            follow,
            auth,
        } => client(&auth)?.events(after, follow).await,
        Command::Fsck {
            data_dir,
            database_url,
            repair: _,
            backend: Some(config::Backend::S3),
            config,
            deep,
        } => {
            let store = serve::StoreOf {
                data_dir,
                database_url,
                config,
            };
            serve::fsck_s3(store, deep, cli.json).await
        }
        Command::Fsck {
            data_dir,
            database_url,
            repair,
            ..
        } => serve::fsck(&data_dir, database_url, repair, cli.json).await,
        Command::Storage(StorageCommand::Verify(args)) => verify::verify(args, cli.json).await,
        Command::Storage(StorageCommand::Compat(args)) => compat::compat(args, cli.json).await,
        Command::Vend(command) => vend::vend(command, cli.json).await,
        Command::Creds(command) => vend::creds(command).await,
        Command::Audit(command) => audit::audit(command, audit::Service::Serve, cli.json),
        Command::Token(TokenCommand::New { name }) => token_new::token_new(&name, cli.json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "artifactstore",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}
