//! Which driver call ends a lease: a revocation takes back a credential that would still
//! work (`revoke_unexpired`, with the lease's expiry: an STS session is denied upstream
//! until then), the reaper one that has just expired (`revoke`: nothing is left to deny,
//! and denying every expired session would fill the upstream role with policies).

use super::*;

#[tokio::test]
async fn revocations_take_back_live_credentials_and_the_reaper_only_cleans_up() {
    let h = harness().await;
    let revoked = h.service.vend(h.request("alice")).await.unwrap();
    let expiring = h.service.vend(h.request("bob")).await.unwrap();
    let expires_at = |id: &str| {
        let id = id.to_owned();
        let service = h.service.clone();
        async move { service.leases.lease(&id).await.unwrap().unwrap().expires_at }
    };
    let revoked_expiry = expires_at(&revoked.lease_id).await;

    let outcome = h
        .service
        .revoke(
            &RevokeTarget::Lease {
                id: revoked.lease_id.clone(),
            },
            "leaked",
            false,
        )
        .await
        .unwrap();
    assert_eq!(outcome.leases[0].upstream, "deleted");
    assert_eq!(outcome.leases[0].usable_until, None, "nothing outlives it");
    assert_eq!(
        *h.driver.unexpired.lock().unwrap(),
        [(revoked.lease_id.clone(), revoked_expiry)]
    );

    h.clock.advance(Duration::from_secs(900));
    assert_eq!(h.service.reap_once().await.unwrap(), 1);
    assert!(
        h.driver
            .revokes()
            .iter()
            .any(|(lease, _)| lease == &expiring.lease_id),
        "the reaper deletes the expired key"
    );
    assert_eq!(
        h.driver.unexpired.lock().unwrap().len(),
        1,
        "the reaper asked to take back a credential that had expired"
    );
}
