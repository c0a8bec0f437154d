//! The query of `GET /v1/admin/leases`: every parameter checked, and a parameter this
//! route does not know refused — a misspelt filter must not silently list every lease.

use artifactstore_model::Timestamp;
use serde::Deserialize;

use crate::leases::{LeaseFilter, LeaseState};

/// Leases answered when the query names no `limit`.
pub const DEFAULT_LIMIT: u32 = 1000;
/// The most leases one answer holds.
pub const MAX_LIMIT: u32 = 10_000;

const STATES: [LeaseState; 5] = [
    LeaseState::Pending,
    LeaseState::Active,
    LeaseState::Revoked,
    LeaseState::Expired,
    LeaseState::Failed,
];

/// The parameters as sent; [`parse`] checks each.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    issuer: Option<String>,
    subject: Option<String>,
    role: Option<String>,
    state: Option<String>,
    driver: Option<String>,
    expiring_before: Option<String>,
    break_glass: Option<String>,
    live: Option<String>,
    limit: Option<String>,
}

fn boolean(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{name} must be true or false, not {:?}", short(v))),
    }
}

fn short(v: &str) -> String {
    v.chars().take(64).collect()
}

/// The filter and limit of a lease query (`issuer=&subject=&role=&state=&driver=
/// &expiring_before=&break_glass=&live=&limit=`), or a message saying what is wrong.
pub fn parse(query: Option<&str>) -> Result<(LeaseFilter, u32), String> {
    let raw: Raw =
        serde_urlencoded::from_str(query.unwrap_or("")).map_err(|e| format!("query: {e}"))?;
    let nonempty = |name: &str, v: Option<String>| match v {
        Some(v) if v.is_empty() => Err(format!("{name} is empty: leave it out to match any")),
        v => Ok(v),
    };
    let state = match raw.state.as_deref() {
        None => None,
        Some(s) => Some(
            STATES
                .into_iter()
                .find(|st| st.as_str() == s)
                .ok_or_else(|| {
                    format!(
                        "state must be one of pending, active, revoked, expired, failed, not {:?}",
                        short(s)
                    )
                })?,
        ),
    };
    let expiring_before = match raw.expiring_before.as_deref() {
        None => None,
        Some(t) => Some(Timestamp::parse_rfc3339(t).ok_or_else(|| {
            format!(
                "expiring_before must be an RFC 3339 time such as 2026-12-08T09:30:00Z, not {:?}",
                short(t)
            )
        })?),
    };
    let limit = match raw.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, not {:?}",
                    short(l)
                ));
            }
        },
    };
    let filter = LeaseFilter {
        issuer: nonempty("issuer", raw.issuer)?,
        subject: nonempty("subject", raw.subject)?,
        role: nonempty("role", raw.role)?,
        live_only: raw
            .live
            .as_deref()
            .map(|v| boolean("live", v))
            .transpose()?
            .unwrap_or(false),
        state,
        driver: nonempty("driver", raw.driver)?,
        expiring_before,
        break_glass: raw
            .break_glass
            .as_deref()
            .map(|v| boolean("break_glass", v))
            .transpose()?,
    };
    Ok((filter, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_is_read() {
        let (f, limit) = parse(Some(
            "issuer=https%3A%2F%2Fi.test&subject=repo%3Aa%2Fb&role=ci-writer&state=active\
             &driver=garage&expiring_before=2026-12-08T09%3A30%3A00Z&break_glass=true\
             &live=true&limit=5",
        ))
        .unwrap();
        assert_eq!(f.issuer.as_deref(), Some("https://i.test"));
        assert_eq!(f.subject.as_deref(), Some("repo:a/b"));
        assert_eq!(f.role.as_deref(), Some("ci-writer"));
        assert_eq!(f.state, Some(LeaseState::Active));
        assert_eq!(f.driver.as_deref(), Some("garage"));
        assert_eq!(
            f.expiring_before,
            Timestamp::parse_rfc3339("2026-12-08T09:30:00Z")
        );
        assert_eq!(f.break_glass, Some(true));
        assert!(f.live_only);
        assert_eq!(limit, 5);
        let (f, limit) = parse(None).unwrap();
        assert!(f.issuer.is_none() && f.state.is_none() && f.break_glass.is_none());
        assert!(!f.live_only);
        assert_eq!(limit, DEFAULT_LIMIT);
        assert_eq!(
            parse(Some("break_glass=false")).unwrap().0.break_glass,
            Some(false)
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_parameter() {
        for (query, word) in [
            ("state=alive", "state must be one of"),
            (
                "expiring_before=tomorrow",
                "expiring_before must be an RFC 3339",
            ),
            (
                "expiring_before=2026-12-08",
                "expiring_before must be an RFC 3339",
            ),
            ("break_glass=yes", "break_glass must be true or false"),
            ("live=1", "live must be true or false"),
            ("limit=0", "limit must be a whole number from 1 to 10000"),
            ("limit=10001", "limit must be a whole number"),
            ("limit=-3", "limit must be a whole number"),
            ("subject=", "subject is empty"),
            ("subjct=alice", "unknown field `subjct`"),
        ] {
            let e = parse(Some(query)).unwrap_err();
            assert!(e.contains(word), "{query}: {e}");
        }
    }
}
