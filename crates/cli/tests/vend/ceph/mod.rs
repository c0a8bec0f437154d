//! Vending and the server's own credential sources on Ceph RGW's STS, from
//! `scripts/s3-fixture.sh ceph`: a real STS that enforces what it is given — role
//! policies and session policies both, session tokens required. Roles, OIDC providers
//! and buckets are made through RGW's IAM API with the fixture's key (`ceph_iam.py`).

mod driver;
mod revocation;
mod sources;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{REQUIRE_LIVE_S3, live_or_skip};

/// The Ceph RGW of the fixture, when it is running.
pub struct Ceph {
    pub endpoint: String,
    pub sts_url: String,
    pub region: String,
    pub bucket: String,
    /// The fixture key's user, for trust policies.
    pub user_arn: String,
    pub access_key_id_ref: String,
    pub secret_access_key_ref: String,
    /// The fixture key's secret: a canary that must appear in no output.
    pub secret: String,
}

pub fn ceph() -> Option<Ceph> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(sts_url), Some(user_arn), Some("ceph")) = (
        var("ARTIFACTSTORE_FIXTURE_STS_URL"),
        var("ARTIFACTSTORE_FIXTURE_CEPH_USER_ARN"),
        var("ARTIFACTSTORE_FIXTURE_SERVER").as_deref(),
    ) else {
        live_or_skip(
            false,
            "live Ceph RGW (run under scripts/s3-fixture.sh ceph)",
            REQUIRE_LIVE_S3,
        );
        return None;
    };
    let secret_access_key_ref = var("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF").unwrap();
    let secret = std::fs::read_to_string(secret_access_key_ref.strip_prefix("file:").unwrap())
        .unwrap()
        .trim()
        .to_owned();
    Some(Ceph {
        endpoint: var("ARTIFACTSTORE_S3_ENDPOINT_URL").unwrap(),
        sts_url,
        region: var("ARTIFACTSTORE_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        bucket: var("ARTIFACTSTORE_S3_BUCKET").unwrap(),
        user_arn,
        access_key_id_ref: var("ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF").unwrap(),
        secret_access_key_ref,
        secret,
    })
}

/// Runs `ceph_iam.py OP ARGS...` against the fixture; its JSON answer.
pub fn iam(op: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vend/ceph_iam.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(op)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "ceph_iam.py {op}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

/// A name of this test process's own, for roles and buckets (the fixture outlives one
/// test binary when a developer reuses it).
pub fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Creates a role with this trust policy and a role policy allowing every S3 action
/// on every bucket, so that whatever is refused is refused by a session policy or a
/// trust policy; its ARN.
pub fn role(name: &str, trust: Value) -> String {
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}
    ]});
    let answer = iam("role", &[name, &trust.to_string(), &policy.to_string()]);
    answer["arn"].as_str().unwrap().to_owned()
}

/// A trust policy that lets the fixture's user assume the role.
pub fn trusts_user(c: &Ceph) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": [c.user_arn]},
        "Action": ["sts:AssumeRole"]
    }]})
}

/// boto3's S3 settings for `s3.py` against this Ceph (`bucket` instead of the fixture's
/// when given).
pub fn ceph_s3_env(c: &Ceph, bucket: Option<&str>) -> Vec<(&'static str, String)> {
    vec![
        ("T_S3_ENDPOINT", c.endpoint.clone()),
        ("T_REGION", c.region.clone()),
        ("T_BUCKET", bucket.unwrap_or(&c.bucket).to_owned()),
    ]
}
