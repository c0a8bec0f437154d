//! `/readyz`: each check by name, ok or failing, to anyone. What failed — URLs,
//! paths, an upstream's words — goes to the log, and into the answer only for a
//! request with the admin token.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::service::Service;

/// Each check's name and its outcome (the detail of a failure).
type Checks = Vec<(String, Result<(), String>)>;

/// The last round of checks, reused for a second.
pub(super) type ReadyCache = artifactstore_http::recent::Recent<Checks>;

/// Ready when every issuer's keys are loaded, every driver answers, the audit log can
/// be written and the lease store answers. Issuers are named by their place in the
/// configuration (`issuers.0`), drivers by their name (`drivers.garage`).
pub(super) async fn readyz(
    State(service): State<Arc<Service>>,
    Extension(cache): Extension<Arc<ReadyCache>>,
    headers: HeaderMap,
) -> Response {
    let checks = cache.get(|| run_checks(&service)).await;
    answer(&service, &headers, checks)
}

async fn run_checks(service: &Service) -> Checks {
    let mut checks: Checks = Vec::new();
    for (i, issuer) in service.verifier.issuers.iter().enumerate() {
        let result = if issuer.loaded() {
            Ok(())
        } else {
            Err(format!(
                "issuer {}: keys not loaded{}",
                issuer.issuer,
                issuer
                    .last_error()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ))
        };
        checks.push((format!("issuers.{i}"), result));
    }
    for (name, driver) in &service.drivers {
        let result = driver
            .check()
            .await
            .map_err(|e| format!("driver {name}: {e}"));
        checks.push((format!("drivers.{name}"), result));
    }
    let audit = if service.audit.writable() {
        Ok(())
    } else {
        Err(format!(
            "audit log {}: not writable",
            service.audit.path().display()
        ))
    };
    checks.push(("audit".to_owned(), audit));
    let leases = service
        .leases
        .ping()
        .await
        .map_err(|e| format!("lease store: {e}"));
    checks.push(("lease_store".to_owned(), leases));
    // Logged once per round, not once per probe.
    for (name, result) in &checks {
        if let Err(detail) = result {
            tracing::warn!(check = %name, "not ready: {detail}");
        }
    }
    checks
}

fn answer(service: &Service, headers: &HeaderMap, checks: Checks) -> Response {
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let admin = super::admin::is_admin(service, headers);
    let mut states = Map::new();
    let mut details = Map::new();
    for (name, result) in checks {
        let state = match result {
            Ok(()) => "ok",
            Err(detail) => {
                if admin {
                    details.insert(name.clone(), Value::String(detail));
                }
                "failing"
            }
        };
        states.insert(name, Value::String(state.to_owned()));
    }
    let mut body = json!({
        "status": if ready { "ready" } else { "unready" },
        "checks": states,
    });
    if admin {
        body["details"] = Value::Object(details);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
