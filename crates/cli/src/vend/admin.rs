//! `artifactstore vend leases | revoke | unrevoke`: clients of the vending service's
//! admin API. The credential — the admin token, or an OIDC token that the service's
//! `[admin] rules` accept — is read from a file, never taken on the command line
//! (where other users and shell histories would see it).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use crate::exit::{self, fail};

use super::{http, read_secret_file, refused, send};

/// Where the admin API is and who calls it.
#[derive(Args)]
pub struct AdminConn {
    /// Base URL of the vending service.
    #[arg(long, env = "ARTIFACTSTORE_VEND_URL")]
    vend_url: String,
    /// File holding the admin credential: the admin token ([admin] token_ref of the
    /// service) or an OIDC token matching one of its [admin] rules.
    #[arg(
        long,
        visible_alias = "token-file",
        env = "ARTIFACTSTORE_VEND_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    admin_token_file: PathBuf,
}

impl AdminConn {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.vend_url.trim_end_matches('/'))
    }

    /// Sends `method path` with the credential and `body`; the answer's JSON, or the
    /// failure its status means (401 → 7, 403 → 8, 404 → 3, others 1).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let token = read_secret_file(&self.admin_token_file, "admin token file")?;
        let url = self.url(path);
        let mut req = http()?
            .request(method, &url)
            .bearer_auth(&token)
            .query(query);
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req, &url)
            .await?
            .map_err(|(status, answer)| refused(status, &answer))
    }
}

#[derive(Args)]
pub struct LeasesArgs {
    #[command(flatten)]
    conn: AdminConn,
    /// Only leases of this subject (`sub`).
    #[arg(long)]
    subject: Option<String>,
    /// Only leases of tokens of this issuer.
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    role: Option<String>,
    /// Only leases in this state.
    #[arg(long, value_parser = ["pending", "active", "revoked", "expired", "failed"])]
    state: Option<String>,
    /// Only leases minted by this driver (its name under [drivers]).
    #[arg(long)]
    driver: Option<String>,
    /// Only leases expiring before this time (RFC 3339, e.g. 2026-12-08T09:30:00Z).
    #[arg(long, value_name = "TIME")]
    expiring_before: Option<String>,
    /// Only break-glass leases.
    #[arg(long)]
    break_glass: bool,
    /// Only live leases (pending or active).
    #[arg(long)]
    live: bool,
    /// At most this many (newest first; the service's default is 1000, its maximum 10000).
    #[arg(long)]
    limit: Option<u32>,
}

/// Revoke a lease, or a subject or role (its live leases and future vending).
#[derive(Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    conn: AdminConn,
    #[command(flatten)]
    target: Target,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// Record a revocation of a role or issuer the service does not know.
    #[arg(long)]
    force: bool,
}

/// Lift a standing revocation of a subject or role.
#[derive(Args)]
pub struct UnrevokeArgs {
    #[command(flatten)]
    conn: AdminConn,
    /// A subject (`sub`); needs --issuer.
    #[arg(long, requires = "issuer", conflicts_with = "role")]
    subject: Option<String>,
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    role: Option<String>,
}

/// What a revocation covers: one of --lease, --subject with --issuer, --role.
#[derive(Args)]
pub struct Target {
    /// One lease, by id.
    #[arg(long, conflicts_with_all = ["subject", "role"])]
    lease: Option<String>,
    /// A subject (`sub`); needs --issuer.
    #[arg(long, requires = "issuer", conflicts_with = "role")]
    subject: Option<String>,
    /// The issuer of --subject.
    #[arg(long)]
    issuer: Option<String>,
    /// A role: its live leases, and vending to it until the revocation is lifted.
    #[arg(long)]
    role: Option<String>,
}

impl Target {
    fn body(&self) -> anyhow::Result<Value> {
        match (&self.lease, &self.subject, &self.role) {
            (Some(id), None, None) => Ok(json!({"kind": "lease", "id": id})),
            (None, Some(subject), None) => {
                Ok(json!({"kind": "subject", "issuer": self.issuer, "subject": subject}))
            }
            (None, None, Some(role)) => Ok(json!({"kind": "role", "role": role})),
            _ => Err(fail(
                exit::USAGE,
                "give one of --lease, --subject (with --issuer) or --role",
            )),
        }
    }
}

pub async fn leases(args: LeasesArgs, json_out: bool) -> anyhow::Result<u8> {
    let mut query: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("subject", &args.subject),
        ("issuer", &args.issuer),
        ("role", &args.role),
        ("state", &args.state),
        ("driver", &args.driver),
        ("expiring_before", &args.expiring_before),
    ] {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    if args.break_glass {
        query.push(("break_glass", "true".into()));
    }
    if args.live {
        query.push(("live", "true".into()));
    }
    if let Some(n) = args.limit {
        query.push(("limit", n.to_string()));
    }
    let answer = args
        .conn
        .call(reqwest::Method::GET, "/v1/admin/leases", &query, None)
        .await?;
    let leases = answer["leases"]
        .as_array()
        .context("the service's answer has no `leases`")?;
    if json_out {
        println!("{answer}");
    } else {
        print!("{}", lease_table(leases));
    }
    Ok(0)
}

/// The table `vend leases` prints: one row per lease, columns as wide as their
/// widest cell.
fn lease_table(leases: &[Value]) -> String {
    let header = [
        "ID",
        "SUBJECT",
        "ROLE",
        "DRIVER",
        "STATE",
        "EXPIRES",
        "BREAK-GLASS",
    ];
    let text = |l: &Value, k: &str| l[k].as_str().unwrap_or("").to_owned();
    let rows: Vec<[String; 7]> = leases
        .iter()
        .map(|l| {
            [
                text(l, "id"),
                text(l, "subject"),
                text(l, "role"),
                text(l, "driver"),
                text(l, "state"),
                text(l, "expires_at"),
                if l["break_glass"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        out.push_str("(no leases)\n");
    }
    out
}

pub async fn revoke(args: RevokeArgs, json_out: bool) -> anyhow::Result<u8> {
    let mut body = args.target.body()?;
    body["reason"] = json!(args.reason);
    body["force"] = json!(args.force);
    let answer = args
        .conn
        .call(
            reqwest::Method::POST,
            "/v1/admin/revocations",
            &[],
            Some(body),
        )
        .await?;
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
                "  {}  upstream: {}{}{}",
                l["lease_id"].as_str().unwrap_or(""),
                l["upstream"].as_str().unwrap_or(""),
                // `unsupported`: the credential works until then, and the user is told.
                l["usable_until"]
                    .as_str()
                    .map(|t| format!(" (usable until {t})"))
                    .unwrap_or_default(),
                l["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        if answer["standing"].as_bool() == Some(true) {
            println!("future vending is refused until the revocation is lifted");
        }
        if answer["audited"].as_bool() == Some(false) {
            eprintln!("warning: the service could not write the audit line of this revocation");
        }
    }
    let failed = answer["leases"]
        .as_array()
        .is_some_and(|l| l.iter().any(|l| l["upstream"] == "error"));
    Ok(if failed { exit::FAILURE } else { 0 })
}

pub async fn unrevoke(args: UnrevokeArgs, json_out: bool) -> anyhow::Result<u8> {
    let body = match (&args.subject, &args.role) {
        (Some(subject), None) => {
            json!({"kind": "subject", "issuer": args.issuer, "subject": subject})
        }
        (None, Some(role)) => json!({"kind": "role", "role": role}),
        _ => {
            return Err(fail(
                exit::USAGE,
                "give one of --subject (with --issuer) or --role",
            ));
        }
    };
    let answer = args
        .conn
        .call(
            reqwest::Method::DELETE,
            "/v1/admin/revocations",
            &[],
            Some(body),
        )
        .await?;
    if json_out {
        println!("{answer}");
    } else if answer["removed"].as_bool() == Some(true) {
        println!("revocation lifted: vending to it is allowed again");
    } else {
        println!("no such revocation was standing");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_table_aligns_its_columns_and_marks_break_glass() {
        let table = lease_table(&[
            json!({"id": "abc", "subject": "repo:acme/app", "role": "ci-writer", "driver": "garage",
                   "state": "active", "expires_at": "2026-12-08T01:00:00Z", "break_glass": false}),
            json!({"id": "d", "subject": "ops", "role": "r", "driver": "g",
                   "state": "revoked", "expires_at": "2026-12-08T00:15:00Z", "break_glass": true}),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID   SUBJECT        ROLE       DRIVER  STATE"));
        assert!(lines[1].ends_with("2026-12-08T01:00:00Z  no"), "{table}");
        assert!(lines[2].ends_with("2026-12-08T00:15:00Z  yes"), "{table}");
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[2][col..col + 7], "revoked");
        assert_eq!(lease_table(&[]).lines().nth(1), Some("(no leases)"));
    }
}
