//! Refusals that a flood is made of (unverifiable tokens, rate limits, requests a
//! caller may not make) are audited per window and client, not one synced line each:
//! - the first refusal of a client opens its window and is written as its own
//!   `decision` line (`count: 1`), whose request id every later refusal of that
//!   window answers with;
//! - the others are counted, by reason;
//! - when the window has passed, a `refusals.coalesced` line carries the count of
//!   those not written (at the client's next refusal, at the next sweep, or when the
//!   service shuts down), so the `count`s of a client's lines add up to its refusals.
//!
//! So a client costs at most two lines per window. At most `max_tracked` windows are
//! open at once; refusals of clients beyond that share one window of client `other`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use artifactstore_model::Timestamp;

/// The client of the windows of clients beyond `max_tracked`.
pub const OVERFLOW_CLIENT: &str = "other";

/// Whose refusals one window counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WindowKey {
    /// The client address as limited (an IPv4 address, an IPv6 /64), or `other`.
    pub client: String,
    /// A verified (issuer, subject) whose refusals are counted apart from the rest
    /// of its client's; `None` before a verified identity.
    pub subject: Option<(String, String)>,
}

struct Window {
    request_id: String,
    opened: Timestamp,
    /// Refusals counted after the one written when the window opened.
    further: u64,
    by_reason: BTreeMap<&'static str, u64>,
}

/// The count of a window that has passed, to be written as one line.
#[derive(Debug)]
pub struct Summary {
    pub key: WindowKey,
    pub request_id: String,
    pub opened: Timestamp,
    pub count: u64,
    pub by_reason: BTreeMap<&'static str, u64>,
}

/// What to write for a refusal just noted.
#[derive(Debug)]
pub enum Noted {
    /// A new window: write this refusal's own line (after `closed`'s summary).
    Opened {
        request_id: String,
        key: WindowKey,
        closed: Option<Box<Summary>>,
    },
    /// Counted in the open window of `request_id`; nothing to write now.
    Counted { request_id: String },
}

pub struct Coalescer {
    window: Duration,
    max_tracked: usize,
    open: Mutex<HashMap<WindowKey, Window>>,
}

impl Coalescer {
    pub fn new(window: Duration, max_tracked: usize) -> Self {
        Coalescer {
            window,
            max_tracked: max_tracked.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Notes a refusal of `reason` for `key` at `now`; `new_id` names a window that
    /// opens with it.
    pub fn note(
        &self,
        key: WindowKey,
        reason: &'static str,
        now: Timestamp,
        new_id: impl FnOnce() -> String,
    ) -> Noted {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let key = if !open.contains_key(&key) && open.len() >= self.max_tracked {
            WindowKey {
                client: OVERFLOW_CLIENT.to_owned(),
                subject: None,
            }
        } else {
            key
        };
        let mut closed = None;
        if let Some(w) = open.get_mut(&key) {
            if now < w.opened.saturating_add(self.window) {
                w.further += 1;
                *w.by_reason.entry(reason).or_default() += 1;
                return Noted::Counted {
                    request_id: w.request_id.clone(),
                };
            }
            let w = open.remove(&key).expect("present");
            closed = summary(key.clone(), w).map(Box::new);
        }
        let request_id = new_id();
        open.insert(
            key.clone(),
            Window {
                request_id: request_id.clone(),
                opened: now,
                further: 0,
                by_reason: BTreeMap::new(),
            },
        );
        Noted::Opened {
            request_id,
            key,
            closed,
        }
    }

    /// Closes every window that has passed by `now`: the summaries of those that
    /// counted anything.
    pub fn due(&self, now: Timestamp) -> Vec<Summary> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let passed: Vec<WindowKey> = open
            .iter()
            .filter(|(_, w)| now >= w.opened.saturating_add(self.window))
            .map(|(k, _)| k.clone())
            .collect();
        passed
            .into_iter()
            .filter_map(|k| {
                let w = open.remove(&k)?;
                summary(k, w)
            })
            .collect()
    }

    /// Closes every window (at shutdown).
    pub fn drain(&self) -> Vec<Summary> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.drain().filter_map(|(k, w)| summary(k, w)).collect()
    }

    /// How many windows are open.
    pub fn tracked(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Summary {
    /// The `detail` of its line: what it stands for.
    pub fn detail(&self, window: Duration) -> String {
        format!(
            "{} more refusals of this client in the window opened at {} (audit window {} s), counted, not written one by one",
            self.count,
            self.opened.rfc3339(),
            window.as_secs()
        )
    }
}

fn summary(key: WindowKey, w: Window) -> Option<Summary> {
    (w.further > 0).then_some(Summary {
        key,
        request_id: w.request_id,
        opened: w.opened,
        count: w.further,
        by_reason: w.by_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn key(client: &str) -> WindowKey {
        WindowKey {
            client: client.into(),
            subject: None,
        }
    }

    /// What a run of notes would write: (opened lines, summaries).
    fn lines(notes: Vec<Noted>, mut end: Vec<Summary>) -> (u64, Vec<Summary>) {
        let mut opened = 0;
        for n in notes {
            if let Noted::Opened { closed, .. } = n {
                opened += 1;
                end.extend(closed.map(|s| *s));
            }
        }
        (opened, end)
    }

    #[test]
    fn n_refusals_of_one_client_in_one_window_are_two_lines_that_count_n() {
        let c = Coalescer::new(Duration::from_secs(60), 100);
        let mut ids = 0;
        let mut next = || {
            ids += 1;
            format!("w{ids}")
        };
        let n = 10_000u64;
        let notes: Vec<Noted> = (0..n)
            .map(|i| {
                let reason = if i % 3 == 0 {
                    "token_invalid"
                } else {
                    "rate_limited"
                };
                let at = T0.saturating_add(Duration::from_millis(i));
                c.note(key("192.0.2.1"), reason, at, &mut next)
            })
            .collect();
        assert!(matches!(&notes[1], Noted::Counted { request_id } if request_id == "w1"));
        // Nothing due inside the window; due after it.
        assert!(c.due(T0.saturating_add(Duration::from_secs(59))).is_empty());
        let due = c.due(T0.saturating_add(Duration::from_secs(60)));
        let (opened, summaries) = lines(notes, due);
        assert_eq!((opened, summaries.len()), (1, 1));
        let s = &summaries[0];
        assert_eq!(opened + s.count, n);
        assert_eq!(s.by_reason.values().sum::<u64>(), n - 1);
        assert_eq!(s.request_id, "w1");
        assert_eq!(c.tracked(), 0);
    }

    #[test]
    fn a_client_coming_back_after_its_window_closes_it_first() {
        let c = Coalescer::new(Duration::from_secs(10), 100);
        let mut n = 0;
        let mut notes = Vec::new();
        let mut id = 0;
        for second in 0..35u64 {
            for _ in 0..7 {
                n += 1;
                notes.push(c.note(
                    key("192.0.2.1"),
                    "rate_limited",
                    T0.saturating_add(Duration::from_secs(second)),
                    || {
                        id += 1;
                        id.to_string()
                    },
                ));
            }
        }
        let (opened, summaries) = lines(notes, c.drain());
        // Windows at 0, 10, 20, 30: four opening lines, four summaries.
        assert_eq!((opened, summaries.len()), (4, 4));
        assert_eq!(opened + summaries.iter().map(|s| s.count).sum::<u64>(), n);
    }

    #[test]
    fn clients_beyond_the_cap_share_one_window() {
        let c = Coalescer::new(Duration::from_secs(60), 8);
        let mut notes = Vec::new();
        for i in 0..1000u32 {
            notes.push(c.note(
                key(&format!("10.0.{}.{}", i / 256, i % 256)),
                "token_invalid",
                T0,
                || i.to_string(),
            ));
        }
        assert_eq!(c.tracked(), 9, "eight clients and `other`");
        let (opened, summaries) = lines(notes, c.drain());
        assert_eq!(opened, 9);
        assert_eq!(
            opened + summaries.iter().map(|s| s.count).sum::<u64>(),
            1000
        );
        assert!(summaries.iter().any(|s| s.key.client == OVERFLOW_CLIENT));
    }
}
