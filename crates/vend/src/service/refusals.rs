//! vend's refusals of a flood's kind — before a verified identity (rate-limited,
//! malformed, unverifiable token, oversized body) and a subject's rate limit — are
//! coalesced per window and client by the shared [`Coalescer`]; this is the line a
//! window's summary is written as.

use std::time::Duration;

pub use artifactstore_audit::{Coalescer, Noted, OVERFLOW_CLIENT, Summary, WindowKey};

use crate::audit::AuditRecord;

/// A passed window's audit line.
pub fn summary_record(s: &Summary, window: Duration) -> AuditRecord {
    let (issuer, subject) = match &s.key.subject {
        Some((i, s)) => (Some(i.clone()), Some(s.clone())),
        None => (None, None),
    };
    AuditRecord {
        event: "refusals.coalesced",
        request_id: Some(s.request_id.clone()),
        decision: Some("deny"),
        detail: Some(s.detail(window)),
        // A break-glass window's identity is the path's fixed name, never verified.
        identity_verified: s
            .key
            .subject
            .as_ref()
            .map(|_| !super::break_glass::is_break_glass_window(&s.key.subject)),
        issuer,
        subject,
        client: Some(s.key.client.clone()),
        count: Some(s.count),
        by_reason: Some(s.by_reason.clone()),
        // Break-glass attempts are `critical`, their windows' summaries too.
        severity: super::break_glass::is_break_glass_window(&s.key.subject).then_some("critical"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifactstore_model::Timestamp;

    #[test]
    fn a_summary_line_counts_what_was_not_written() {
        let c = Coalescer::new(Duration::from_secs(60), 100);
        let t0 = Timestamp::from_unix_millis(1_800_000_000_000);
        let key = WindowKey {
            client: "192.0.2.1".into(),
            subject: None,
        };
        for _ in 0..5 {
            c.note(key.clone(), "rate_limited", t0, || "w1".into());
        }
        let s = c.drain().pop().unwrap();
        let line = serde_json::to_value(summary_record(&s, c.window())).unwrap();
        assert_eq!(line["event"], "refusals.coalesced");
        assert_eq!(line["count"], 4);
        assert_eq!(line["client"], "192.0.2.1");
        assert_eq!(line["by_reason"]["rate_limited"], 4);
    }
}
