//! The one time type of the workspace, and the one clock.
//!
//! Every layer (index rows, leases, credentials, audit lines, wire formats) speaks
//! [`Timestamp`]: Unix time in milliseconds. Conversions to seconds, `SystemTime` and
//! RFC 3339 live here and nowhere else, so no module multiplies or divides by 1000.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// A point in time: Unix milliseconds, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub const fn from_unix_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Parses RFC 3339 (`2026-12-02T10:00:00Z`, fractions and offsets allowed).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        let millis = t.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).ok().map(Timestamp)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub const fn unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }

    /// RFC 3339 UTC, with fractional seconds only when there are some.
    pub fn rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// How long from `self` until `later`; zero when `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp::from_system_time(t)
    }
}

/// On the wire a time is an RFC 3339 string.
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
    }
}

/// The time, replaceable in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// The system clock as a shareable handle, the default wherever a clock is injected.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicI64::new(start.0))
    }

    /// Starts at the system's current time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        let t = Timestamp::from_unix_secs(1_764_633_600);
        assert_eq!(t.unix_millis(), 1_764_633_600_000);
        assert_eq!(t.rfc3339(), "2025-12-02T00:00:00Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339()), Some(t));
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        let f = Timestamp::from_unix_millis(1_764_633_600_250);
        assert_eq!(f.rfc3339(), "2025-12-02T00:00:00.25Z");
        assert_eq!(f.unix_secs(), 1_764_633_600);
        assert_eq!(Timestamp::from_unix_millis(-1).unix_secs(), -1);
        assert_eq!(
            Timestamp::parse_rfc3339("2025-12-02T01:00:00+01:00"),
            Some(Timestamp::from_unix_secs(1_764_633_600))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, "\"2025-12-02T00:00:00.25Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), f);
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
    }

    #[test]
    fn arithmetic_saturates_and_until_is_never_negative() {
        let t = Timestamp::from_unix_secs(100);
        assert_eq!(t.saturating_add(Duration::from_secs(5)).unix_secs(), 105);
        assert_eq!(t.saturating_sub(Duration::from_secs(5)).unix_secs(), 95);
        assert_eq!(t.until(Timestamp::from_unix_secs(90)), Duration::ZERO);
        assert_eq!(
            t.until(Timestamp::from_unix_secs(102)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_secs(10));
        assert_eq!(c.now().unix_secs(), 10);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now().unix_millis(), 11_500);
        c.set(Timestamp::from_unix_secs(3));
        assert_eq!(c.now().unix_secs(), 3);
    }
}
