use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifactstore_index::{EventKind, Index, NewFile, VersionAge, VersionId};
use artifactstore_model::{
    Digest, FilePath, ManualClock, Name, Namespace, Timestamp, Version, VersionState,
};

use super::*;

const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
const HOUR: Duration = Duration::from_secs(3600);

fn rules(toml_text: &str) -> Retention {
    #[derive(serde::Deserialize)]
    struct File {
        retention: Vec<RetentionConfig>,
    }
    let f: File = toml::from_str(toml_text).unwrap();
    Retention::new(&f.retention).unwrap()
}

/// `n` complete versions `1..=n`, completed an hour apart ending at T0, with `branch`
/// labels from `branches` in turn.
fn complete(n: u64, branches: &[&str]) -> Vec<VersionAge> {
    (1..=n)
        .map(|i| VersionAge {
            version: i.to_string(),
            state: VersionState::Complete,
            labels: BTreeMap::from([(
                "branch".to_owned(),
                branches[(i as usize - 1) % branches.len()].to_owned(),
            )]),
            completed_at: Some(T0.saturating_sub(HOUR * (n - i) as u32)),
            completed_seq: Some(i as i64),
            expires_at: None,
            last_upload_at: T0.saturating_sub(HOUR * (n - i) as u32),
        })
        .collect()
}

fn expired(r: &Retention, versions: &[VersionAge], now: Timestamp) -> Vec<String> {
    let mut v: Vec<String> = r
        .plan("ci", "app", versions, now)
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    v.sort_by_key(|v| v.parse::<u64>().unwrap_or(0));
    v
}

#[test]
fn keep_last_keeps_the_newest_and_latest_is_never_expired() {
    let r = rules("[[retention]]\nnamespaces = [\"ci\"]\nkeep_last = 3\n");
    assert_eq!(expired(&r, &complete(5, &["main"]), T0), ["1", "2"]);
    // The reason names the rule.
    let plan = r.plan("ci", "app", &complete(5, &["main"]), T0);
    assert_eq!(plan[0].1, "retention rule #1: keep_last");
    // A name no rule matches keeps everything.
    assert!(
        r.plan("other", "app", &complete(5, &["main"]), T0)
            .is_empty()
    );
}

#[test]
fn max_age_expires_old_versions_but_not_the_protected_ones() {
    let r = rules("[[retention]]\nnamespaces = [\"*\"]\nmax_age_days = 1\nkeep_last = 2\n");
    let versions = complete(4, &["main"]);
    assert!(
        expired(&r, &versions, T0).is_empty(),
        "all younger than a day"
    );
    // Two days on: all are old; the newest two are kept by keep_last.
    let later = T0.saturating_add(HOUR * 48);
    assert_eq!(expired(&r, &versions, later), ["1", "2"]);
    // Without keep_last only latest survives age.
    let r = rules("[[retention]]\nnamespaces = [\"*\"]\nmax_age_days = 1\n");
    assert_eq!(expired(&r, &versions, later), ["1", "2", "3"]);
}

#[test]
fn keep_per_label_keeps_the_newest_of_each_value() {
    let r = rules(
        "[[retention]]\nname = \"branches\"\nnamespaces = [\"ci\"]\nkeep_per_label = \"branch\"\n",
    );
    // main, dev, main, dev, feature: newest main is 3, newest dev 4, feature 5 (latest).
    let versions = complete(5, &["main", "dev", "main", "dev", "feature"]);
    assert_eq!(expired(&r, &versions, T0), ["1", "2"]);
    // latest's value counts: the older `feature` version goes.
    let versions = complete(4, &["feature", "dev", "dev", "feature"]);
    assert_eq!(expired(&r, &versions, T0), ["1", "2"]);
    assert_eq!(
        r.plan("ci", "app", &versions, T0)[0].1,
        "retention rule branches: keep_per_label"
    );
}

#[test]
fn open_versions_expire_only_after_the_timeout_since_their_last_upload() {
    let r = rules("[[retention]]\nnamespaces = [\"ci\"]\nopen_timeout_hours = 24\n");
    let mut open = complete(1, &["main"]);
    open[0].state = VersionState::Open;
    open[0].completed_seq = None;
    assert!(expired(&r, &open, T0.saturating_add(HOUR * 23)).is_empty());
    assert_eq!(expired(&r, &open, T0.saturating_add(HOUR * 24)), ["1"]);
}

#[test]
fn producer_expiry_is_capped_by_the_rule_and_applies_without_one() {
    let r = rules("[[retention]]\nnamespaces = [\"ci\"]\nmax_expires_days = 7\n");
    assert_eq!(
        r.producer_expiry("ci", "app", 30, T0),
        T0.saturating_add(HOUR * 24 * 7)
    );
    assert_eq!(
        r.producer_expiry("ci", "app", 2, T0),
        T0.saturating_add(HOUR * 48)
    );
    assert_eq!(
        r.producer_expiry("other", "app", 30, T0),
        T0.saturating_add(HOUR * 24 * 30),
        "no rule, no cap"
    );
    let mut versions = complete(3, &["main"]);
    for v in &mut versions {
        v.expires_at = Some(T0.saturating_add(HOUR));
    }
    assert!(expired(&r, &versions, T0).is_empty());
    let later = T0.saturating_add(HOUR);
    assert_eq!(expired(&r, &versions, later), ["1", "2"], "latest stays");
    assert_eq!(expired(&Retention::default(), &versions, later), ["1", "2"]);
}

#[test]
fn rules_that_say_nothing_or_zero_are_refused() {
    for bad in [
        "[[retention]]\nnamespaces = [\"ci\"]\n",
        "[[retention]]\nnamespaces = []\nkeep_last = 1\n",
        "[[retention]]\nnamespaces = [\"ci\"]\nkeep_last = 0\n",
        "[[retention]]\nnamespaces = [\"ci\"]\nmax_age_days = 0\n",
    ] {
        #[derive(serde::Deserialize)]
        struct File {
            retention: Vec<RetentionConfig>,
        }
        let f: File = toml::from_str(bad).unwrap();
        assert!(Retention::new(&f.retention).is_err(), "{bad}");
    }
}

fn id(version: &str) -> VersionId {
    VersionId {
        namespace: Namespace::parse("ci").unwrap(),
        name: Name::parse("app").unwrap(),
        version: Version::parse(version).unwrap(),
    }
}

/// The whole pass on a real index with an injected clock: versions age, expire with a
/// `version.expired` event naming the rule, and `latest` stays.
#[tokio::test]
async fn expire_tombstones_what_the_rules_say_as_time_passes() {
    for (_dir, url) in artifactstore_db::testing::databases("retention").await {
        let clock = Arc::new(ManualClock::new(T0));
        let index = Index::open_with_clock(&url, clock.clone()).await.unwrap();
        for v in ["1", "2", "3"] {
            let data = format!("file of {v}");
            let file = NewFile {
                path: FilePath::parse("a.txt").unwrap(),
                digest: Digest::of(data.as_bytes()),
                size: data.len() as u64,
                media_type: "text/plain".into(),
            };
            index.add_file(&id(v), file).await.unwrap();
            index.complete(&id(v), None).await.unwrap();
            clock.advance(HOUR);
        }
        let open = NewFile {
            path: FilePath::parse("b.txt").unwrap(),
            digest: Digest::of(b"b"),
            size: 1,
            media_type: "text/plain".into(),
        };
        index.add_file(&id("4"), open).await.unwrap();
        let r = rules(
            "[[retention]]\nname = \"ci\"\nnamespaces = [\"ci\"]\nmax_age_days = 1\nopen_timeout_hours = 2\n",
        );
        assert_eq!(expire(&index, &r, false).await.unwrap(), 0);
        clock.advance(HOUR * 24);
        assert_eq!(expire(&index, &r, true).await.unwrap(), 3, "dry run counts");
        assert_eq!(
            index.version(&id("1")).await.unwrap().unwrap().state,
            VersionState::Complete
        );
        assert_eq!(expire(&index, &r, false).await.unwrap(), 3);
        for (v, state) in [
            ("1", VersionState::Deleted),
            ("2", VersionState::Deleted),
            ("3", VersionState::Complete),
            ("4", VersionState::Deleted),
        ] {
            assert_eq!(
                index.version(&id(v)).await.unwrap().unwrap().state,
                state,
                "{v}"
            );
        }
        let events = index.events(0, 100).await.unwrap();
        let mut expired: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::VersionExpired)
            .map(|e| (e.version.as_str(), e.reason.as_deref().unwrap_or("")))
            .collect();
        expired.sort();
        assert_eq!(
            expired,
            [
                ("1", "retention rule ci: max_age_days"),
                ("2", "retention rule ci: max_age_days"),
                ("4", "retention rule ci: open_timeout_hours"),
            ]
        );
        assert_eq!(expire(&index, &r, false).await.unwrap(), 0, "nothing twice");
    }
}
