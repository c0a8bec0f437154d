//! The other credential sources on vended credentials: the container endpoint, a
//! credential_process and a sidecar file, and AssumeRole at moto.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Serve, assert_no_secret_in};
use crate::common::{BIN, block_on};
use crate::helpers::*;
use crate::live::{bootstrap_moto, setup, start_moto, write_token};

#[test]
fn container_process_and_file_sources_serve_from_vended_credentials() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let vend = Vend::start(
        &issuer,
        Some(&g),
        setup("examples/vend-garage.toml", "", &[]),
    );
    let token = issuer.token(writer_claims("sources"));
    let token_file = write_token(vend.dir.path(), "t.jwt", &token);

    // container: the vend service's container-credentials route.
    let serve = Serve::start(&[
        ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "container".into()),
        (
            "ARTIFACTSTORE_S3_CONTAINER_CREDENTIALS_URL",
            format!("{}/v1/container-credentials?role=ci-writer", vend.url),
        ),
        (
            "ARTIFACTSTORE_S3_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ]);
    assert!(serve.round_trip("container"));
    let (_, ready) = get_text(&format!("{}/readyz", serve.url));
    assert!(ready.contains("\"credentials\":\"ok\""), "{ready}");
    assert_no_secret_in("logs", &serve.logs(), &[&token]);
    drop(serve);

    // process: `artifactstore creds process`.
    let serve = Serve::start(&[
        ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "process".into()),
        (
            "ARTIFACTSTORE_S3_CREDENTIAL_PROCESS",
            format!(
                "{BIN} creds process --vend-url {} --token-file {}",
                vend.url,
                token_file.display()
            ),
        ),
    ]);
    assert!(serve.round_trip("process"));
    drop(serve);

    // file: a sidecar writes credential_process JSON; a rewritten file is picked up
    // before the old credential is due, so revoking the old lease breaks nothing.
    let sidecar = |file: &std::path::Path| -> String {
        let (status, c, _) = vend.credentials(&token, json!({}));
        assert_eq!(status, 200, "{c}");
        let doc = json!({"Version": 1, "AccessKeyId": c["access_key_id"], "SecretAccessKey": c["secret_access_key"],
                         "SessionToken": c["session_token"], "Expiration": c["expiration"]});
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string()).unwrap();
        std::fs::rename(&tmp, file).unwrap();
        c["lease_id"].as_str().unwrap().to_owned()
    };
    let file = vend.dir.path().join("sidecar.json");
    let first = sidecar(&file);
    let serve = Serve::start(&[
        ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "file".into()),
        (
            "ARTIFACTSTORE_S3_CREDENTIALS_FILE",
            file.display().to_string(),
        ),
    ]);
    assert!(serve.round_trip("file-1"));
    std::thread::sleep(Duration::from_millis(1100));
    sidecar(&file);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(serve.round_trip("file-2"));
    let (status, out) = vend.admin(
        "POST",
        "/v1/admin/revocations",
        Some(json!({"kind": "lease", "id": first, "reason": "rotated by the sidecar"})),
    );
    assert_eq!(status, 200, "{out}");
    assert!(
        serve.round_trip("file-3"),
        "the server still used the revoked key"
    );
    let secret_canary = std::fs::read_to_string(&file).unwrap();
    let doc: Value = serde_json::from_str(&secret_canary).unwrap();
    let (_, metrics) = get_text(&format!("{}/metrics", serve.url));
    for text in [serve.logs(), metrics] {
        assert_no_secret_in(
            "logs and metrics",
            &text,
            &[doc["SecretAccessKey"].as_str().unwrap(), &token],
        );
    }
}

/// The assume-role source, live against moto's STS in auth mode (SigV4 checked, the
/// session token required). moto's S3 rejects the signature of ListMultipartUploads,
/// which `serve` sends at start-up, so the credentials are used with boto3 here.
#[test]
fn the_assume_role_source_gets_working_temporary_credentials_from_moto() {
    use artifactstore_credentials::sources::{AssumeRoleSource, StaticSource};
    use artifactstore_credentials::{RefreshPolicy, RefreshingCache};
    use artifactstore_model::secret::Secret;
    let Some(moto) = start_moto() else { return };
    let boot = bootstrap_moto(&moto);
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::artifacts/*"}]}"#;
    let source = AssumeRoleSource::new(
        &moto.url,
        "us-east-1",
        &StaticSource {
            access_key_id: Secret::new(boot["access_key_id"].as_str().unwrap()),
            secret_access_key: Secret::new(boot["secret_access_key"].as_str().unwrap()),
            session_token: None,
        },
        boot["role_arn"].as_str().unwrap().to_owned(),
        "artifactstore-test".into(),
        Some(policy.into()),
        Some(900),
    );
    let cache = RefreshingCache::new(std::sync::Arc::new(source), RefreshPolicy::default());
    let c = block_on(async move {
        let c = cache.get().await.unwrap();
        (c, cache.expires_at().unwrap())
    });
    let (c, expires) = c;
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((850..=900).contains(&left), "{left}");
    let mut env = vec![
        ("T_S3_ENDPOINT", moto.url.clone()),
        ("T_REGION", "us-east-1".to_owned()),
        ("T_BUCKET", "artifacts".to_owned()),
        ("T_AK", c.access_key_id.clone()),
        ("T_SK", c.secret_access_key.expose().to_owned()),
    ];
    assert_eq!(
        boto3("put", "assumed.txt", &env)["ok"],
        false,
        "moto must want the session token"
    );
    env.push((
        "T_ST",
        c.session_token.as_ref().unwrap().expose().to_owned(),
    ));
    let put = boto3("put", "assumed.txt", &env);
    assert_eq!(put["ok"], true, "{put}");
    assert_eq!(boto3("get", "assumed.txt", &env)["same"], true);
    // What moto recorded: our session name and session policy.
    let (_, data) = get_json(&format!("{}/moto-api/data.json", moto.url));
    let text = data.to_string();
    assert!(
        text.contains("artifactstore-test"),
        "no AssumeRole with our session name"
    );
    assert!(
        text.contains("arn:aws:s3:::artifacts/*"),
        "the session policy was not sent"
    );

    // Wrong base keys: a clear error naming the endpoint and code, no secret.
    let wrong = AssumeRoleSource::new(
        &moto.url,
        "us-east-1",
        &StaticSource {
            access_key_id: Secret::new(boot["access_key_id"].as_str().unwrap()),
            secret_access_key: Secret::new("wrong-secret-canary"),
            session_token: None,
        },
        boot["role_arn"].as_str().unwrap().to_owned(),
        "artifactstore-test".into(),
        None,
        None,
    );
    let err = block_on(async move {
        use artifactstore_credentials::CredentialSource;
        wrong.fetch().await.unwrap_err().to_string()
    });
    assert!(err.contains("STS at http://127.0.0.1:"), "{err}");
    assert!(err.contains("AssumeRole of role "), "{err}");
    assert!(err.contains("403"), "{err}");
    assert!(!err.contains("wrong-secret-canary"));
}
