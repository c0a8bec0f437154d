//! `artifactstore vend break-glass` and `artifactstore vend hash-credential`. The
//! break-glass credential is read from a file or typed at a prompt that does not echo,
//! never taken on the command line (where other users and shell histories would see
//! it).

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;

use artifactstore_model::secret::Secret;
use artifactstore_vend::service::break_glass::credential;
use clap::Args;
use serde_json::json;

use crate::exit::{self, fail};

use super::{http, read_secret_file, refused, send};

#[derive(Args)]
pub struct BreakGlassArgs {
    /// Base URL of the vending service.
    #[arg(long, env = "ARTIFACTSTORE_VEND_URL")]
    vend_url: String,
    /// The role (one of the service's `[break_glass] roles`).
    #[arg(long)]
    role: String,
    /// Why break-glass is needed (required; recorded in the audit log and the lease).
    #[arg(long)]
    reason: String,
    /// An incident or change ticket to record with the lease.
    #[arg(long)]
    ticket: Option<String>,
    /// Lease duration in seconds (default and ceiling: the service's maximum).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// File holding the break-glass credential. Without it, the credential is asked
    /// for on the terminal.
    #[arg(long, value_name = "FILE")]
    credential_file: Option<PathBuf>,
}

pub async fn break_glass(args: BreakGlassArgs, json_out: bool) -> anyhow::Result<u8> {
    if args.reason.trim().is_empty() {
        return Err(fail(
            exit::USAGE,
            "--reason must say why break-glass is needed",
        ));
    }
    let credential = match &args.credential_file {
        Some(path) => Secret::new(read_secret_file(path, "break-glass credential file")?),
        None => {
            if !std::io::stdin().is_terminal() {
                return Err(fail(
                    exit::USAGE,
                    "no --credential-file and stdin is not a terminal: give the credential in a file or run this at a terminal",
                ));
            }
            prompt_hidden("break-glass credential: ")?
        }
    };
    let url = format!("{}/v1/break-glass", args.vend_url.trim_end_matches('/'));
    let req = http()?
        .post(&url)
        .bearer_auth(credential.expose())
        .json(&json!({
            "role": args.role,
            "reason": args.reason,
            "ticket": args.ticket,
            "duration_secs": args.duration_secs,
        }));
    let answer = send(req, &url)
        .await?
        .map_err(|(status, answer)| refused(status, &answer))?;
    let field = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
    eprintln!(
        "WARNING: break-glass lease {} on role {} until {}: this use is audited as critical. \
         Revoke it when done: artifactstore vend revoke --lease {} --reason \"...\"",
        field("lease_id"),
        field("role"),
        field("expiration"),
        field("lease_id"),
    );
    if json_out {
        println!("{answer}");
    } else {
        for (var, key) in [
            ("AWS_ACCESS_KEY_ID", "access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
            ("AWS_SESSION_TOKEN", "session_token"),
        ] {
            println!("export {var}={}", shell_quote(&field(key)));
        }
        println!(
            "# expires {}; bucket {}",
            field("expiration"),
            field("bucket")
        );
    }
    Ok(0)
}

/// `vend hash-credential`: the PHC string on stdout. At a terminal the credential is
/// typed twice, without echo; otherwise stdin is read whole (trailing line breaks
/// dropped). A credential with other surrounding whitespace is refused: the service
/// and `--credential-file` trim it, so it could never be used.
pub fn hash_credential() -> anyhow::Result<u8> {
    let credential = if std::io::stdin().is_terminal() {
        let first = prompt_hidden("break-glass credential: ")?;
        let again = prompt_hidden("again: ")?;
        if first != again {
            return Err(fail(exit::USAGE, "the two entries differ"));
        }
        first
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| fail(exit::USAGE, format!("stdin: {e}")))?;
        let credential = Secret::new(text.trim_end_matches(['\n', '\r']));
        text.clear();
        credential
    };
    let phc = credential::hash(&credential).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    println!("{phc}");
    Ok(0)
}

/// Reads one line from the terminal with echo off (restored afterwards).
fn prompt_hidden(prompt: &str) -> anyhow::Result<Secret> {
    use std::os::fd::AsRawFd as _;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| fail(exit::USAGE, format!("/dev/tty: {e}")))?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr on a descriptor we hold open.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        return Err(fail(exit::USAGE, "cannot read the terminal's settings"));
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: as above; the settings are restored below whatever the read gives.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) } != 0 {
        return Err(fail(exit::USAGE, "cannot turn the terminal's echo off"));
    }
    let mut line = String::new();
    let read = (&tty)
        .write_all(prompt.as_bytes())
        .and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
    // SAFETY: as above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.map_err(|e| fail(exit::USAGE, format!("/dev/tty: {e}")))?;
    let credential = Secret::new(line.trim_end_matches(['\n', '\r']));
    line.clear();
    Ok(credential)
}

/// `value` as one word for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}
