//! The Garage driver: one key per lease through the admin API v2, created with an
//! expiration (Garage enforces it) and allowed on the role's bucket. Garage grants
//! per bucket, never per prefix; config load refuses prefix-scoped roles on it unless
//! they accept bucket-wide scope.

use std::collections::HashMap;
use std::time::Duration;

use artifactstore_model::secret::Secret;
use serde_json::{Value, json};

use super::{DriverError, MintDriver, MintRequest, Minted, MintedKey, Revoked};
use crate::policy::Scope;
use crate::roles::Action;

/// Keys this driver creates are named with this prefix and the lease id, so that a
/// key whose lease never recorded it can still be found.
pub const KEY_NAME_PREFIX: &str = "artifactstore-vend-";

pub struct GarageDriver {
    admin_url: String,
    token: Secret,
    http: reqwest::Client,
    bucket_ids: tokio::sync::Mutex<HashMap<String, String>>,
}

impl GarageDriver {
    pub fn new(admin_url: &str, token: Secret, http: reqwest::Client) -> Self {
        GarageDriver {
            admin_url: admin_url.trim_end_matches('/').to_owned(),
            token,
            http,
            bucket_ids: Default::default(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<(reqwest::StatusCode, Value), DriverError> {
        let endpoint = path_and_query.split('?').next().unwrap_or(path_and_query);
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.admin_url))
            .bearer_auth(self.token.expose())
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| {
            DriverError::Unavailable(format!(
                "Garage admin API at {} ({endpoint}): {}",
                self.admin_url,
                if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "request failed".to_owned()
                }
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, value))
    }

    fn failure(&self, what: &str, status: reqwest::StatusCode, body: &Value) -> DriverError {
        let code = body.get("code").and_then(Value::as_str).unwrap_or("");
        let message = format!(
            "Garage admin API at {}: {what}: HTTP {status}{}",
            self.admin_url,
            if code.is_empty() {
                String::new()
            } else {
                format!(" {code}")
            }
        );
        if status.is_server_error() {
            DriverError::Unavailable(message)
        } else {
            DriverError::Refused(message)
        }
    }

    async fn bucket_id(&self, bucket: &str) -> Result<String, DriverError> {
        if let Some(id) = self.bucket_ids.lock().await.get(bucket) {
            return Ok(id.clone());
        }
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/v2/GetBucketInfo?globalAlias={}", urlencode(bucket)),
                None,
            )
            .await?;
        if !status.is_success() {
            return Err(self.failure(&format!("bucket {bucket:?}"), status, &body));
        }
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| DriverError::Unavailable("GetBucketInfo answered without an id".into()))?
            .to_owned();
        self.bucket_ids
            .lock()
            .await
            .insert(bucket.to_owned(), id.clone());
        Ok(id)
    }

    async fn delete_key(&self, id: &str) -> Result<Revoked, DriverError> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v2/DeleteKey?id={}", urlencode(id)),
                None,
            )
            .await?;
        match status.as_u16() {
            200..=299 => Ok(Revoked::Deleted),
            404 => Ok(Revoked::AlreadyGone),
            _ => Err(self.failure("DeleteKey", status, &body)),
        }
    }
}

impl GarageDriver {
    /// The keys named by this driver (`artifactstore-vend-<lease id>`), from
    /// `ListKeys`, with the creation time Garage reports for each.
    async fn minted_keys(&self) -> Result<Vec<MintedKey>, DriverError> {
        let (status, body) = self
            .call(reqwest::Method::GET, "/v2/ListKeys", None)
            .await?;
        if !status.is_success() {
            return Err(self.failure("ListKeys", status, &body));
        }
        Ok(minted_keys_of(&body))
    }
}

/// The keys of a `ListKeys` answer that this driver named.
fn minted_keys_of(list: &Value) -> Vec<MintedKey> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| {
            let lease_id = k
                .get("name")?
                .as_str()?
                .strip_prefix(KEY_NAME_PREFIX)
                .filter(|id| !id.is_empty())?;
            Some(MintedKey {
                lease_id: lease_id.to_owned(),
                access_key_id: k.get("id")?.as_str()?.to_owned(),
                created: k
                    .get("created")
                    .and_then(Value::as_str)
                    .and_then(artifactstore_model::Timestamp::parse_rfc3339),
            })
        })
        .collect()
}

#[cfg(test)]
#[test]
fn only_keys_this_driver_named_are_listed_as_minted() {
    // The shape of Garage 2.5's ListKeys answer.
    let list = json!([
        {"id": "GK1", "name": "artifactstore-fixture", "created": "2026-12-08T00:00:41.516Z", "expiration": null, "expired": false},
        {"id": "GK2", "name": "artifactstore-vend-abc123", "created": "2026-12-08T00:00:42.433Z", "expiration": "2027-01-01T00:00:00Z", "expired": false},
        {"id": "GK3", "name": "artifactstore-vend-", "created": null},
        {"id": "GK4", "name": "artifactstore-vend-def456"}
    ]);
    assert_eq!(
        minted_keys_of(&list),
        vec![
            MintedKey {
                lease_id: "abc123".into(),
                access_key_id: "GK2".into(),
                created: artifactstore_model::Timestamp::parse_rfc3339("2026-12-08T00:00:42.433Z"),
            },
            MintedKey {
                lease_id: "def456".into(),
                access_key_id: "GK4".into(),
                created: None,
            },
        ]
    );
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Garage's `read` grants reading and listing together, `write` writing and deleting:
/// an action set is enforceable only when it holds both or neither of each pair.
pub fn garage_actions_exact(actions: &std::collections::BTreeSet<Action>) -> Result<(), String> {
    let pair = |a: Action, b: Action| actions.contains(&a) == actions.contains(&b);
    if pair(Action::Read, Action::List) && pair(Action::Write, Action::Delete) {
        Ok(())
    } else {
        Err(
            "Garage grants read with list and write with delete: ask for both of a pair or neither"
                .into(),
        )
    }
}

#[async_trait::async_trait]
impl MintDriver for GarageDriver {
    fn kind(&self) -> &'static str {
        "garage"
    }

    fn can_enforce(&self, scope: &Scope, base: &Scope) -> Result<(), String> {
        if scope.prefixes != base.prefixes {
            return Err(
                "the policy narrows key prefixes, which Garage cannot enforce (its keys reach whole buckets)".into(),
            );
        }
        garage_actions_exact(&scope.actions)
    }

    async fn mint(&self, request: &MintRequest<'_>) -> Result<Minted, DriverError> {
        let bucket_id = self.bucket_id(&request.scope.bucket).await?;
        let expiration = request.expires_at.rfc3339();
        if expiration.is_empty() {
            return Err(DriverError::Refused("expiry out of range".into()));
        }
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v2/CreateKey",
                Some(json!({
                    "name": format!("{KEY_NAME_PREFIX}{}", request.lease_id),
                    "expiration": expiration,
                })),
            )
            .await?;
        if !status.is_success() {
            return Err(self.failure("CreateKey", status, &body));
        }
        let (Some(id), Some(secret)) = (
            body.get("accessKeyId").and_then(Value::as_str),
            body.get("secretAccessKey").and_then(Value::as_str),
        ) else {
            return Err(DriverError::Unavailable(
                "CreateKey answered without a key".into(),
            ));
        };
        let id = id.to_owned();
        let secret = Secret::new(secret);
        let actions = &request.scope.actions;
        let read = actions.contains(&Action::Read) || actions.contains(&Action::List);
        let write = actions.contains(&Action::Write) || actions.contains(&Action::Delete);
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v2/AllowBucketKey",
                Some(json!({
                    "bucketId": bucket_id,
                    "accessKeyId": id,
                    "permissions": { "read": read, "write": write, "owner": false },
                })),
            )
            .await?;
        if !status.is_success() {
            // Do not leave a key behind that no lease will ever delete.
            if let Err(e) = self.delete_key(&id).await {
                tracing::warn!(error = %e, "could not delete a key whose bucket grant failed; it expires on its own");
            }
            return Err(self.failure("AllowBucketKey", status, &body));
        }
        Ok(Minted {
            access_key_id: id,
            secret_access_key: secret,
            session_token: None,
            expires_at: request.expires_at,
        })
    }

    async fn revoke(
        &self,
        lease_id: &str,
        access_key_id: Option<&str>,
    ) -> Result<Revoked, DriverError> {
        if let Some(id) = access_key_id {
            return self.delete_key(id).await;
        }
        let ids: Vec<String> = self
            .minted_keys()
            .await?
            .into_iter()
            .filter(|k| k.lease_id == lease_id)
            .map(|k| k.access_key_id)
            .collect();
        let mut result = Revoked::AlreadyGone;
        for id in ids {
            if self.delete_key(&id).await? == Revoked::Deleted {
                result = Revoked::Deleted;
            }
        }
        Ok(result)
    }

    async fn list_minted(&self) -> Result<Option<Vec<MintedKey>>, DriverError> {
        self.minted_keys().await.map(Some)
    }

    async fn check(&self) -> Result<(), DriverError> {
        let (status, body) = self
            .call(reqwest::Method::GET, "/v2/GetClusterHealth", None)
            .await?;
        if !status.is_success() {
            return Err(self.failure("GetClusterHealth", status, &body));
        }
        match body.get("status").and_then(Value::as_str) {
            Some("healthy") | Some("degraded") | None => Ok(()),
            Some(other) => Err(DriverError::Unavailable(format!(
                "Garage reports cluster status {other:?}"
            ))),
        }
    }
}
