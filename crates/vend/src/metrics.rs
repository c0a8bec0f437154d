//! `/metrics` of the vend service, on the shared renderer
//! (`artifactstore_model::metrics`). Values are read at scrape time into a snapshot;
//! labels are reasons (a closed enum), results (`ok`/`error`) and configured issuers.

use std::sync::atomic::Ordering;

use artifactstore_model::metrics::prometheus_client::collector::Collector;
use artifactstore_model::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use artifactstore_model::metrics::prometheus_client::metrics::MetricType;
use artifactstore_model::metrics::prometheus_client::metrics::counter::ConstCounter;
use artifactstore_model::metrics::prometheus_client::metrics::gauge::ConstGauge;
use artifactstore_model::metrics::prometheus_client::registry::Registry;
use artifactstore_model::metrics::{const_counter, const_gauge};

use crate::reason::Reason;
use crate::service::Service;

#[derive(Debug)]
struct IssuerSnapshot {
    issuer: String,
    refreshes_ok: u64,
    refreshes_failed: u64,
    loaded: bool,
    keys: usize,
}

/// Everything `/metrics` shows, read once per scrape.
#[derive(Debug)]
struct Snapshot {
    decisions: Vec<(Reason, u64)>,
    issued: u64,
    mint_failures: u64,
    reaped: u64,
    revoked: u64,
    /// Crash reconciliation: (action, count).
    reconciled: [(&'static str, u64); 2],
    unknown_keys: u64,
    /// Break-glass attempts (allowed, refused) and failed webhook deliveries; zero
    /// when break-glass is off.
    break_glass: [u64; 3],
    audit_failures: u64,
    mint_seconds: f64,
    live: u64,
    audit_writable: bool,
    issuers: Vec<IssuerSnapshot>,
}

pub async fn render(service: &Service) -> String {
    let c = &service.counters;
    let decisions = c.decisions.lock().unwrap().clone();
    let snapshot = Snapshot {
        decisions: Reason::all()
            .map(|r| (r, decisions.get(r.as_str()).copied().unwrap_or(0)))
            .collect(),
        issued: c.issued.load(Ordering::Relaxed),
        mint_failures: c.mint_failures.load(Ordering::Relaxed),
        reaped: c.reaped.load(Ordering::Relaxed),
        revoked: c.revoked.load(Ordering::Relaxed),
        reconciled: [
            (
                "pending_failed",
                c.reconciled_pending.load(Ordering::Relaxed),
            ),
            (
                "orphan_key_deleted",
                c.reconciled_orphans.load(Ordering::Relaxed),
            ),
        ],
        unknown_keys: c.unknown_keys.load(Ordering::Relaxed),
        break_glass: service.break_glass.as_ref().map_or([0; 3], |bg| {
            let c = &bg.counters;
            [
                c.allowed.load(Ordering::Relaxed),
                c.refused.load(Ordering::Relaxed),
                c.webhook_failures.load(Ordering::Relaxed),
            ]
        }),
        audit_failures: service.audit.failures.load(Ordering::Relaxed),
        mint_seconds: c.mint_micros.load(Ordering::Relaxed) as f64 / 1e6,
        live: service.leases.live_lease_count().await.unwrap_or(0),
        audit_writable: service.audit.healthy(),
        issuers: service
            .verifier
            .issuers
            .iter()
            .map(|i| IssuerSnapshot {
                issuer: i.issuer.clone(),
                refreshes_ok: i.refreshes_ok.load(Ordering::Relaxed),
                refreshes_failed: i.refreshes_failed.load(Ordering::Relaxed),
                loaded: i.loaded(),
                keys: i.key_count(),
            })
            .collect(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    artifactstore_model::metrics::render(&registry)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        {
            let mut metric = e.encode_descriptor(
                "artifactstore_vend_decisions",
                "Vending decisions by reason code",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in &self.decisions {
                ConstCounter::new(*n)
                    .encode(metric.encode_family(&[("reason", reason.as_str())])?)?;
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "artifactstore_vend_reconciled",
                "Crash reconciliation actions: stuck pending leases failed, orphan upstream keys deleted",
                None,
                MetricType::Counter,
            )?;
            for (action, n) in self.reconciled {
                ConstCounter::new(n).encode(metric.encode_family(&[("action", action)])?)?;
            }
        }
        const_gauge(
            &mut e,
            "artifactstore_vend_unknown_keys",
            "Upstream keys named by vend whose leases this database never recorded, kept by the last reconciliation",
            &[],
            self.unknown_keys as f64,
        )?;
        {
            let mut metric = e.encode_descriptor(
                "artifactstore_vend_break_glass_attempts",
                "Break-glass attempts by result (every one is a critical audit line)",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [
                ("allowed", self.break_glass[0]),
                ("refused", self.break_glass[1]),
            ] {
                ConstCounter::new(n).encode(metric.encode_family(&[("result", result)])?)?;
            }
        }
        const_counter(
            &mut e,
            "artifactstore_vend_break_glass_webhook_failures",
            "Break-glass webhook notifications that were not delivered",
            &[],
            self.break_glass[2],
        )?;
        let counters = [
            (
                "leases_issued",
                "Leases whose credentials were handed out",
                self.issued,
            ),
            (
                "mint_failures",
                "Mints the upstream refused or failed",
                self.mint_failures,
            ),
            (
                "leases_reaped",
                "Expired leases ended by the reaper",
                self.reaped,
            ),
            ("leases_revoked", "Leases ended by revocation", self.revoked),
            (
                "audit_write_failures",
                "Audit lines that could not be written",
                self.audit_failures,
            ),
        ];
        for (name, help, value) in counters {
            const_counter(
                &mut e,
                &format!("artifactstore_vend_{name}"),
                help,
                &[],
                value,
            )?;
        }
        {
            let metric = e.encode_descriptor(
                "artifactstore_vend_mint_seconds",
                "Time spent minting upstream",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(self.mint_seconds).encode(metric)?;
        }
        const_gauge(
            &mut e,
            "artifactstore_vend_leases_live",
            "Leases pending or active",
            &[],
            self.live as f64,
        )?;
        const_gauge(
            &mut e,
            "artifactstore_vend_audit_writable",
            "Whether the last audit write succeeded",
            &[],
            f64::from(u8::from(self.audit_writable)),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "artifactstore_vend_jwks_refreshes",
                "Key set fetches per issuer and result",
                None,
                MetricType::Counter,
            )?;
            for i in &self.issuers {
                for (result, n) in [("ok", i.refreshes_ok), ("error", i.refreshes_failed)] {
                    ConstCounter::new(n).encode(
                        metric
                            .encode_family(&[("issuer", i.issuer.as_str()), ("result", result)])?,
                    )?;
                }
            }
        }
        for (name, help, value) in [
            (
                "artifactstore_vend_jwks_loaded",
                "Whether an issuer's key set has been loaded",
                (|i: &IssuerSnapshot| f64::from(u8::from(i.loaded))) as fn(&IssuerSnapshot) -> f64,
            ),
            (
                "artifactstore_vend_jwks_keys",
                "Signing keys cached per issuer",
                |i: &IssuerSnapshot| i.keys as f64,
            ),
        ] {
            let mut metric = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for i in &self.issuers {
                ConstGauge::new(value(i))
                    .encode(metric.encode_family(&[("issuer", i.issuer.as_str())])?)?;
            }
        }
        Ok(())
    }
}
