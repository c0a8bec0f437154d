//! `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::reason::Reason;
use crate::service::Service;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn render(service: &Service) -> String {
    let mut out = String::new();
    let c = &service.counters;
    out.push_str("# HELP artifactstore_vend_decisions_total Vending decisions by reason code.\n");
    out.push_str("# TYPE artifactstore_vend_decisions_total counter\n");
    let decisions = c.decisions.lock().unwrap().clone();
    for reason in Reason::ALL {
        let n = decisions.get(reason.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "artifactstore_vend_decisions_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    let counters = [
        (
            "leases_issued_total",
            "Leases whose credentials were handed out.",
            c.issued.load(Ordering::Relaxed),
        ),
        (
            "mint_failures_total",
            "Mints the upstream refused or failed.",
            c.mint_failures.load(Ordering::Relaxed),
        ),
        (
            "leases_reaped_total",
            "Expired leases ended by the reaper.",
            c.reaped.load(Ordering::Relaxed),
        ),
        (
            "leases_revoked_total",
            "Leases ended by revocation.",
            c.revoked.load(Ordering::Relaxed),
        ),
        (
            "audit_write_failures_total",
            "Audit lines that could not be written.",
            service.audit.failures.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP artifactstore_vend_{name} {help}");
        let _ = writeln!(out, "# TYPE artifactstore_vend_{name} counter");
        let _ = writeln!(out, "artifactstore_vend_{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP artifactstore_vend_mint_seconds_total Time spent minting upstream."
    );
    let _ = writeln!(out, "# TYPE artifactstore_vend_mint_seconds_total counter");
    let _ = writeln!(
        out,
        "artifactstore_vend_mint_seconds_total {:.6}",
        c.mint_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let live = service.index.live_lease_count().await.unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP artifactstore_vend_leases_live Leases pending or active."
    );
    let _ = writeln!(out, "# TYPE artifactstore_vend_leases_live gauge");
    let _ = writeln!(out, "artifactstore_vend_leases_live {live}");
    let _ = writeln!(
        out,
        "# HELP artifactstore_vend_audit_writable Whether the last audit write succeeded."
    );
    let _ = writeln!(out, "# TYPE artifactstore_vend_audit_writable gauge");
    let _ = writeln!(
        out,
        "artifactstore_vend_audit_writable {}",
        u8::from(service.audit.healthy())
    );
    let _ = writeln!(
        out,
        "# HELP artifactstore_vend_jwks_refreshes_total Key set fetches per issuer and result."
    );
    let _ = writeln!(
        out,
        "# TYPE artifactstore_vend_jwks_refreshes_total counter"
    );
    for i in &service.verifier.issuers {
        let issuer = label(&i.issuer);
        let _ = writeln!(
            out,
            "artifactstore_vend_jwks_refreshes_total{{issuer=\"{issuer}\",result=\"ok\"}} {}",
            i.refreshes_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "artifactstore_vend_jwks_refreshes_total{{issuer=\"{issuer}\",result=\"error\"}} {}",
            i.refreshes_failed.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP artifactstore_vend_jwks_loaded Whether an issuer's key set has been loaded."
    );
    let _ = writeln!(out, "# TYPE artifactstore_vend_jwks_loaded gauge");
    for i in &service.verifier.issuers {
        let _ = writeln!(
            out,
            "artifactstore_vend_jwks_loaded{{issuer=\"{}\"}} {}",
            label(&i.issuer),
            u8::from(i.loaded())
        );
    }
    let _ = writeln!(
        out,
        "# HELP artifactstore_vend_jwks_keys Signing keys cached per issuer."
    );
    let _ = writeln!(out, "# TYPE artifactstore_vend_jwks_keys gauge");
    for i in &service.verifier.issuers {
        let _ = writeln!(
            out,
            "artifactstore_vend_jwks_keys{{issuer=\"{}\"}} {}",
            label(&i.issuer),
            i.key_count()
        );
    }
    out
}
