"""IAM and STS calls at the Ceph RGW of `scripts/s3-fixture.sh ceph`, for the Ceph tests.
Prints one JSON line.

  python3 ceph_iam.py role NAME TRUST_JSON POLICY_JSON   CreateRole + PutRolePolicy -> {"arn"}
  python3 ceph_iam.py oidc-provider URL CLIENT_ID        CreateOpenIDConnectProvider -> {"arn"}
  python3 ceph_iam.py bucket NAME                        CreateBucket -> {}
  python3 ceph_iam.py policies ROLE_NAME                 ListRolePolicies -> {"names"}
  python3 ceph_iam.py put-policy ROLE_NAME NAME JSON     PutRolePolicy -> {}
  python3 ceph_iam.py assume ROLE_ARN                    AssumeRole without a session policy
                                                         -> {"access_key_id", "secret_access_key",
                                                             "session_token"}

Signed with the fixture's key (ARTIFACTSTORE_S3_*_REF, file: references). RGW refuses
policy documents with spaces, so JSON arguments are sent compacted.
"""
import json
import os
import sys

import boto3


def ref(name):
    value = os.environ[name]
    if not value.startswith("file:"):
        raise SystemExit(f"{name} must be a file: reference")
    with open(value[len("file:"):]) as f:
        return f.read().strip()


def compact(text):
    return json.dumps(json.loads(text), separators=(",", ":"))


def client(service):
    return boto3.client(
        service,
        endpoint_url=os.environ["ARTIFACTSTORE_FIXTURE_STS_URL"],
        region_name=os.environ.get("ARTIFACTSTORE_S3_REGION", "us-east-1"),
        aws_access_key_id=ref("ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF"),
        aws_secret_access_key=ref("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF"),
    )


op, args = sys.argv[1], sys.argv[2:]
out = {}
if op == "role":
    name, trust, policy = args
    iam = client("iam")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=compact(trust))
    iam.put_role_policy(RoleName=name, PolicyName="access", PolicyDocument=compact(policy))
    out["arn"] = role["Role"]["Arn"]
elif op == "oidc-provider":
    url, client_id = args
    # RGW does not check the thumbprint; it must only be 40 hex digits.
    provider = client("iam").create_open_id_connect_provider(
        Url=url, ClientIDList=[client_id], ThumbprintList=["0" * 40]
    )
    out["arn"] = provider["OpenIDConnectProviderArn"]
elif op == "bucket":
    (name,) = args
    client("s3").create_bucket(Bucket=name)
elif op == "policies":
    (name,) = args
    out["names"] = client("iam").list_role_policies(RoleName=name)["PolicyNames"]
elif op == "put-policy":
    role, name, policy = args
    client("iam").put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=compact(policy))
elif op == "assume":
    (arn,) = args
    creds = client("sts").assume_role(
        RoleArn=arn, RoleSessionName="no-session-policy", DurationSeconds=900
    )["Credentials"]
    out = {
        "access_key_id": creds["AccessKeyId"],
        "secret_access_key": creds["SecretAccessKey"],
        "session_token": creds["SessionToken"],
    }
else:
    raise SystemExit(f"unknown op {op}")
print(json.dumps(out))
