use std::sync::atomic::AtomicUsize;

use artifactstore_model::ManualClock;

use super::*;

/// Hands out `key-1`, `key-2`, ... living `lifetime` each; fails while `failing`.
struct Counting {
    clock: Arc<ManualClock>,
    lifetime: Duration,
    calls: AtomicUsize,
    failing: AtomicBool,
    delay: Duration,
}

#[async_trait::async_trait]
impl CredentialSource for Counting {
    fn name(&self) -> &'static str {
        "test"
    }
    async fn fetch(&self) -> Result<Credential, SourceError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(SourceError::new("test", "upstream down"));
        }
        Ok(Credential {
            access_key_id: format!("key-{n}"),
            secret_access_key: Secret::new("s"),
            session_token: None,
            expires_at: Some(self.clock.now().saturating_add(self.lifetime)),
        })
    }
}

fn setup(
    lifetime: Duration,
    delay: Duration,
) -> (Arc<ManualClock>, Arc<Counting>, Arc<RefreshingCache>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_secs(1_000_000)));
    let source = Arc::new(Counting {
        clock: clock.clone(),
        lifetime,
        calls: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
        delay,
    });
    let cache = Arc::new(RefreshingCache::with_clock(
        source.clone(),
        RefreshPolicy::default(),
        clock.clone(),
    ));
    (clock, source, cache)
}

#[tokio::test]
async fn refreshes_inside_the_window_and_not_before() {
    // 1 h lifetime: window 5 min (+ up to 1 min jitter).
    let (clock, source, cache) = setup(Duration::from_secs(3600), Duration::ZERO);
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-1");
    clock.advance(Duration::from_secs(3600 - 361));
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-1");
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(62));
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-2");
    assert_eq!(cache.stats.refreshes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_short_lifetime_gets_a_third_as_window() {
    let (clock, _, cache) = setup(Duration::from_secs(60), Duration::ZERO);
    cache.get().await.unwrap();
    clock.advance(Duration::from_secs(35));
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-1");
    clock.advance(Duration::from_secs(6));
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-2");
}

#[tokio::test]
async fn callers_do_not_stampede_one_refresh() {
    let (_, source, cache) = setup(Duration::from_secs(3600), Duration::from_millis(50));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            cache.get().await.unwrap().access_key_id
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "key-1");
    }
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_last_good_credential_serves_while_valid_then_errors() {
    let (clock, source, cache) = setup(Duration::from_secs(600), Duration::ZERO);
    cache.get().await.unwrap();
    source.failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(450)); // inside the 200 s window
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-1");
    assert_eq!(cache.stats.failures.load(Ordering::SeqCst), 1);
    // Backing off: no new attempt within a second.
    cache.get().await.unwrap();
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(2));
    cache.get().await.unwrap();
    assert_eq!(
        source.calls.load(Ordering::SeqCst),
        3,
        "retried after the backoff"
    );
    // Past its usable end (15 s before expiry), the old credential is not handed out.
    clock.advance(Duration::from_secs(140));
    assert!(!cache.has_valid());
    let err = cache.get().await.unwrap_err();
    assert!(err.to_string().contains("upstream down"), "{err}");
    source.failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(61));
    assert!(cache.get().await.unwrap().access_key_id.starts_with("key-"));
    assert!(cache.has_valid());
}

#[tokio::test]
async fn a_rejection_of_the_held_key_forces_one_refresh() {
    let (_, source, cache) = setup(Duration::from_secs(3600), Duration::ZERO);
    cache.get().await.unwrap();
    assert!(cache.reject("key-1"));
    assert!(!cache.reject("key-1"), "a refresh is already forced");
    assert_eq!(cache.stats.forced.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-2");
    assert_eq!(cache.get().await.unwrap().access_key_id, "key-2");
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    assert!(!cache.reject("key-1"), "an old key: nothing to refresh");
    assert!(cache.reject("key-2"), "the new key can be rejected in turn");
}

#[tokio::test]
async fn long_lived_credentials_are_fetched_once() {
    struct Static;
    #[async_trait::async_trait]
    impl CredentialSource for Static {
        fn name(&self) -> &'static str {
            "static"
        }
        async fn fetch(&self) -> Result<Credential, SourceError> {
            Ok(Credential {
                access_key_id: "AK".into(),
                secret_access_key: Secret::new("SK"),
                session_token: None,
                expires_at: None,
            })
        }
    }
    let cache = RefreshingCache::new(Arc::new(Static), RefreshPolicy::default());
    for _ in 0..3 {
        cache.get().await.unwrap();
    }
    assert_eq!(cache.stats.refreshes.load(Ordering::SeqCst), 1);
    assert!(format!("{:?}", cache.get().await.unwrap()).contains("AK"));
    assert!(!format!("{:?}", cache.get().await.unwrap()).contains("SK"));
}

#[test]
fn the_refresh_window_is_the_smaller_of_five_minutes_and_a_third() {
    let secs = |s| refresh_window(Duration::from_secs(s)).as_secs();
    assert_eq!(secs(3600), 300);
    assert_eq!(secs(900), 300);
    assert_eq!(secs(60), 20);
    assert_eq!(secs(0), 0);
}

#[test]
fn jitter_adds_at_most_a_fifth() {
    let window = Duration::from_secs(100);
    for _ in 0..100 {
        let j = with_jitter(window);
        assert!(
            j >= window && j <= window + Duration::from_secs(20),
            "{j:?}"
        );
    }
    assert_eq!(with_jitter(Duration::ZERO), Duration::ZERO);
}
