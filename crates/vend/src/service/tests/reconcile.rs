//! Crash reconciliation in process: the state a killed issue leaves behind is written
//! straight into the lease store and the fake upstream, then one round is run.

use super::*;
use crate::service::reconcile::{RECONCILED_EVENT, ReconcileSettings, Reconciled};

const BOUND: Duration = Duration::from_secs(60);

fn settings(delete_unknown_keys: bool) -> ReconcileSettings {
    ReconcileSettings {
        pending_timeout: BOUND,
        delete_unknown_keys,
    }
}

impl Harness {
    /// A lease row as a killed issue left it: `state`, recorded `age` before now, with
    /// `key` recorded or not.
    async fn left_row(&self, id: &str, state: &str, age: Duration, key: Option<&str>) {
        let issued = self.clock.now().saturating_sub(age).unix_millis();
        let expires = issued + 900_000;
        let key = key.map_or("NULL".to_owned(), |k| format!("'{k}'"));
        self.sql(&format!(
            "INSERT INTO leases (id, issuer, subject, role, driver, access_key_id, issued_at, expires_at, state) \
             VALUES ('{id}', '{ISSUER}', 'alice', 'ci-writer', 'fake', {key}, {issued}, {expires}, '{state}')"
        ))
        .await;
    }

    /// A key upstream, named for `lease_id`, created `age` before now.
    fn left_key(&self, key: &str, lease_id: &str, age: Duration) {
        self.driver
            .keys
            .lock()
            .unwrap()
            .insert(key.into(), lease_id.into());
        self.driver
            .created
            .lock()
            .unwrap()
            .insert(key.into(), self.clock.now().saturating_sub(age));
    }

    async fn state(&self, id: &str) -> (LeaseState, Option<String>) {
        let l = self.service.leases.lease(id).await.unwrap().unwrap();
        (l.state, l.end_reason)
    }

    fn reconciled_lines(&self) -> Vec<Value> {
        self.audit_lines()
            .into_iter()
            .filter(|l| l["event"] == RECONCILED_EVENT)
            .collect()
    }
}

#[tokio::test]
async fn an_issue_killed_mid_saga_is_failed_after_the_bound_and_its_key_deleted() {
    let h = harness().await;
    let two_min = Duration::from_secs(120);
    // Killed after the driver minted: the row never learned its key.
    h.left_row("minted", "pending", two_min, None).await;
    h.left_key("KEY-MINTED", "minted", two_min);
    // Killed after the lease row: nothing was minted.
    h.left_row("unminted", "pending", two_min, None).await;
    // An issue in flight right now: young pending row, fresh key. Not to be touched.
    h.left_row("in-flight", "pending", Duration::from_secs(5), None)
        .await;
    h.left_key("KEY-IN-FLIGHT", "in-flight", Duration::from_secs(1));

    let done = h.service.reconcile_once(&settings(false)).await.unwrap();
    assert_eq!(
        done,
        Reconciled {
            pending_failed: 2,
            orphan_keys_deleted: 0,
            unknown_keys_kept: 0
        }
    );
    for id in ["minted", "unminted"] {
        assert_eq!(
            h.state(id).await,
            (
                LeaseState::Failed,
                Some("pending past the reconciliation bound".into())
            )
        );
    }
    assert_eq!(h.state("in-flight").await.0, LeaseState::Pending);
    assert_eq!(h.driver.live_keys(), ["KEY-IN-FLIGHT"]);
    // Taken back as credentials that would work until their expiry (what lets the STS
    // driver deny a session no listing shows).
    let mut unexpired: Vec<String> = h
        .driver
        .unexpired
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    unexpired.sort();
    assert_eq!(unexpired, ["minted", "unminted"]);

    // One line per action, the key as its HMAC only.
    let lines = h.reconciled_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let minted = lines.iter().find(|l| l["lease_id"] == "minted").unwrap();
    assert_eq!(
        minted["access_key_hmac"].as_str(),
        Some(h.service.key_hmac.of("KEY-MINTED").as_str())
    );
    let detail = minted["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("upstream: deleted; pending_failed:"),
        "{detail}"
    );
    let unminted = lines.iter().find(|l| l["lease_id"] == "unminted").unwrap();
    assert!(unminted.get("access_key_hmac").is_none(), "{unminted}");
    assert!(
        !std::fs::read_to_string(&h.audit_path)
            .unwrap()
            .contains("KEY-MINTED")
    );

    let metrics = crate::metrics::render(&h.service).await;
    assert!(
        metrics.contains("artifactstore_vend_reconciled_total{action=\"pending_failed\"} 2"),
        "{metrics}"
    );

    // A second round finds nothing more to do; once the in-flight issue is as old as
    // the bound, it is a dead one too.
    let done = h.service.reconcile_once(&settings(false)).await.unwrap();
    assert_eq!(done, Reconciled::default());
    h.clock.advance(BOUND);
    let done = h.service.reconcile_once(&settings(false)).await.unwrap();
    assert_eq!(done.pending_failed, 1);
    assert!(h.driver.live_keys().is_empty());
}

#[tokio::test]
async fn keys_of_ended_leases_are_deleted_and_keys_of_live_ones_kept() {
    let h = harness().await;
    let hour = Duration::from_secs(3600);
    // A revocation whose upstream delete failed, a failed issue whose take-back
    // failed: the rows ended, the keys did not.
    h.left_row("revoked", "revoked", hour, Some("KEY-REVOKED"))
        .await;
    h.left_key("KEY-REVOKED", "revoked", hour);
    h.left_row("failed", "failed", hour, None).await;
    h.left_key("KEY-FAILED", "failed", hour);
    // Live leases' keys stay, however old.
    h.left_row("active", "active", hour, Some("KEY-ACTIVE"))
        .await;
    h.left_key("KEY-ACTIVE", "active", hour);

    let done = h.service.reconcile_once(&settings(false)).await.unwrap();
    assert_eq!(done.orphan_keys_deleted, 2, "{done:?}");
    assert_eq!(h.driver.live_keys(), ["KEY-ACTIVE"]);
    assert_eq!(h.state("active").await.0, LeaseState::Active);
    let lines = h.reconciled_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let revoked = lines.iter().find(|l| l["lease_id"] == "revoked").unwrap();
    assert!(
        revoked["detail"]
            .as_str()
            .unwrap()
            .contains("orphan_key_deleted: the key outlived its lease, which ended revoked"),
        "{revoked}"
    );
    let metrics = crate::metrics::render(&h.service).await;
    assert!(
        metrics.contains("artifactstore_vend_reconciled_total{action=\"orphan_key_deleted\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn keys_this_database_never_recorded_are_kept_unless_deleting_them_is_configured() {
    let h = harness().await;
    // Another deployment's key (or one from before a restore): no row here.
    h.left_key("KEY-OLD-STRANGER", "not-ours", Duration::from_secs(3600));
    // One only seconds old: even with deletion on, it is left until past the bound.
    h.left_key(
        "KEY-NEW-STRANGER",
        "not-ours-either",
        Duration::from_secs(5),
    );

    let done = h.service.reconcile_once(&settings(false)).await.unwrap();
    assert_eq!(done.unknown_keys_kept, 2, "{done:?}");
    assert_eq!(h.driver.live_keys().len(), 2);
    let metrics = crate::metrics::render(&h.service).await;
    assert!(
        metrics.contains("artifactstore_vend_unknown_keys 2"),
        "{metrics}"
    );

    let done = h.service.reconcile_once(&settings(true)).await.unwrap();
    assert_eq!((done.orphan_keys_deleted, done.unknown_keys_kept), (1, 1));
    assert_eq!(h.driver.live_keys(), ["KEY-NEW-STRANGER"]);
    let lines = h.reconciled_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["lease_id"], "not-ours");
    assert_eq!(
        lines[0]["access_key_hmac"].as_str(),
        Some(h.service.key_hmac.of("KEY-OLD-STRANGER").as_str())
    );
}

#[tokio::test]
async fn an_issue_that_finishes_as_reconciliation_runs_keeps_its_lease() {
    let h = harness().await;
    // Stuck long enough to be picked, then activated by its issue before the
    // reconciler ends it: the conditional end leaves it alone.
    h.left_row("late", "pending", Duration::from_secs(120), None)
        .await;
    let picked = h
        .service
        .leases
        .pending_before(h.clock.now().saturating_sub(BOUND), 10)
        .await
        .unwrap();
    assert_eq!(picked.len(), 1);
    assert!(
        h.service
            .leases
            .activate_lease("late", "KEY-LATE", h.clock.now().saturating_add(BOUND))
            .await
            .unwrap()
    );
    let ended = h
        .service
        .leases
        .fail_pending(
            "late",
            "pending past the reconciliation bound",
            h.clock.now(),
        )
        .await
        .unwrap();
    assert!(ended.is_none());
    assert_eq!(h.state("late").await.0, LeaseState::Active);
}

#[tokio::test]
async fn a_served_lease_is_never_reconciled() {
    let h = harness().await;
    let issued = h.service.vend(h.request("alice")).await.unwrap();
    h.clock.advance(Duration::from_secs(600));
    let done = h.service.reconcile_once(&settings(true)).await.unwrap();
    assert_eq!(done, Reconciled::default());
    assert_eq!(h.driver.live_keys(), [issued.access_key_id]);
}

#[tokio::test]
async fn a_mint_slower_than_the_bound_is_answered_as_an_unavailable_upstream() {
    let h = harness().await;
    let gate = Arc::new(Gate::default());
    *h.driver.gate.lock().unwrap() = Some(gate.clone());
    let service = h.service.clone();
    let request = h.request("alice");
    let vend = tokio::spawn(async move { service.vend(request).await });
    gate.minting.notified().await;
    // The upstream takes past the bound; reconciliation fails the pending lease.
    h.clock.advance(Duration::from_secs(120));
    let done = h.service.reconcile_once(&settings(false)).await.unwrap();
    assert_eq!(done.pending_failed, 1);
    gate.go.notify_one();

    // Nothing was revoked: the caller is told to try again, not that it is barred.
    let denial = refused(vend.await.unwrap());
    assert_eq!(denial.reason, Reason::UpstreamUnavailable, "{denial:?}");
    let lease = &h.leases().await[0];
    assert_eq!(lease.state, LeaseState::Failed);
    assert!(h.driver.live_keys().is_empty(), "the late key is deleted");
    *h.driver.gate.lock().unwrap() = None;
    h.service.vend(h.request("alice")).await.unwrap();
}
