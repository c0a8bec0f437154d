//! Token buckets against floods: one table per client address (checked before a
//! token is parsed, so a flood costs no signature check) and one per verified
//! subject. Each table holds at most `max_tracked` buckets: a flood of distinct
//! addresses evicts idle buckets first (a full bucket is the same as none), then the
//! least recently used.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use artifactstore_model::Timestamp;

use crate::config::RateLimits;

/// A refusal of the bucket: how long until one request would pass, in whole seconds
/// (at least 1), for `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl Limited {
    /// The refusal: `who` went over `setting` (`rate_limits.per_client_per_sec`).
    pub fn denial(self, who: &str, setting: &str) -> crate::reason::Denial {
        crate::reason::Denial::new(
            crate::reason::Reason::RateLimited,
            format!(
                "{who} sent more requests than {setting} allows; retry in {} s",
                self.retry_after_secs
            ),
        )
        .with_retry_after(self.retry_after_secs)
    }
}

struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date (and so when the key was last seen).
    at: Timestamp,
}

/// Buckets of one kind of key.
pub struct Buckets<K> {
    per_sec: f64,
    burst: f64,
    max_tracked: usize,
    table: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// `per_sec` 0 turns the limit off.
    pub fn new(per_sec: f64, burst: u32, max_tracked: usize) -> Self {
        Buckets {
            per_sec,
            burst: f64::from(burst),
            max_tracked: max_tracked.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: &Bucket, now: Timestamp) -> f64 {
        let elapsed_secs = b.at.until(now).as_secs_f64();
        (b.tokens + elapsed_secs * self.per_sec).min(self.burst)
    }

    /// Takes one token for `key` at `now`, or says how long to wait.
    pub fn take(&self, key: &K, now: Timestamp) -> Result<(), Limited> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !table.contains_key(key) && table.len() >= self.max_tracked {
            self.make_room(&mut table, now);
        }
        let bucket = table.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.refilled(bucket, now);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            let wait = ((1.0 - tokens) / self.per_sec).ceil();
            Err(Limited {
                retry_after_secs: (wait as u64).max(1),
            })
        }
    }

    /// Drops every bucket that has refilled (it says nothing a new one would not);
    /// if that frees less than an eighth of the table, the least recently used eighth
    /// goes too, so that a flood of new keys costs one sweep per eighth, not per key.
    fn make_room(&self, table: &mut HashMap<K, Bucket>, now: Timestamp) {
        table.retain(|_, b| self.refilled(b, now) < self.burst);
        let eighth = (self.max_tracked / 8).max(1);
        if table.len() + eighth <= self.max_tracked {
            return;
        }
        let mut seen: Vec<Timestamp> = table.values().map(|b| b.at).collect();
        let excess = table.len() + eighth - self.max_tracked;
        let (_, cutoff, _) = seen.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let mut dropped = 0;
        table.retain(|_, b| {
            if dropped < excess && b.at <= cutoff {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }

    /// How many buckets are held.
    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The key of a client address: an IPv4 address, or the /64 of an IPv6 one (one
/// host usually holds a whole /64, so its addresses share one bucket).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Both tables.
pub struct Limiter {
    pub clients: Buckets<IpAddr>,
    /// Keyed by (issuer, subject).
    pub subjects: Buckets<(String, String)>,
}

impl Limiter {
    pub fn new(config: &RateLimits) -> Self {
        Limiter {
            clients: Buckets::new(
                config.per_client_per_sec,
                config.per_client_burst,
                config.max_tracked,
            ),
            subjects: Buckets::new(
                config.per_subject_per_sec,
                config.per_subject_burst,
                config.max_tracked,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    #[test]
    fn a_bucket_passes_its_burst_then_its_rate() {
        let b = Buckets::new(2.0, 5, 10);
        for _ in 0..5 {
            b.take(&"a", T0).unwrap();
        }
        assert_eq!(
            b.take(&"a", T0),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        // Another key has its own bucket.
        b.take(&"b", T0).unwrap();
        // Half a second later, one more (2 per second).
        let later = T0.saturating_add(Duration::from_millis(500));
        b.take(&"a", later).unwrap();
        assert!(b.take(&"a", later).is_err());
        // Long idle: full again, never more than the burst.
        let much_later = T0.saturating_add(Duration::from_secs(3600));
        for _ in 0..5 {
            b.take(&"a", much_later).unwrap();
        }
        assert!(b.take(&"a", much_later).is_err());
    }

    #[test]
    fn retry_after_says_when_a_token_is_back() {
        let b = Buckets::new(0.1, 1, 10);
        b.take(&"a", T0).unwrap();
        assert_eq!(b.take(&"a", T0).unwrap_err().retry_after_secs, 10);
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let b = Buckets::new(0.0, 0, 10);
        for _ in 0..1000 {
            b.take(&"a", T0).unwrap();
        }
        assert_eq!(b.tracked(), 0);
    }

    /// A flood of distinct keys never holds more than `max_tracked` buckets, and a key
    /// that is being limited keeps its bucket while idle ones make room.
    #[test]
    fn the_table_is_bounded_and_evicts_idle_buckets_first() {
        let b = Buckets::new(1.0, 2, 100);
        b.take(&u32::MAX, T0).unwrap();
        b.take(&u32::MAX, T0).unwrap();
        assert!(b.take(&u32::MAX, T0).is_err());
        for i in 0..100_000u32 {
            // Idle buckets (refilled) are swept; the busy ones, a millisecond apart,
            // are dropped oldest first.
            let at = T0.saturating_add(Duration::from_millis(u64::from(i / 1000)));
            b.take(&i, at).unwrap();
            assert!(b.tracked() <= 100);
        }
        let b = Buckets::new(1.0, 2, 4);
        for key in 0..4u32 {
            b.take(&key, T0).unwrap();
        }
        // Key 0 is exhausted and recent; 1..3 refilled by now.
        let later = T0.saturating_add(Duration::from_secs(5));
        b.take(&0, later).unwrap();
        b.take(&0, later).unwrap();
        b.take(&99, later).unwrap();
        assert!(
            b.take(&0, later).is_err(),
            "the limited key kept its bucket"
        );
        assert_eq!(b.tracked(), 2);
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
