"""One S3 operation with boto3, for the vending tests. Prints one JSON line.

  python3 s3.py put|get|delete KEY

Endpoint, region and bucket come from T_S3_ENDPOINT, T_REGION, T_BUCKET. Credentials
come from T_AK/T_SK/T_ST when set; otherwise from boto3's own provider chain
(AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN + AWS_ENDPOINT_URL_STS, container
credentials, credential_process, ...), untouched.
"""
import hashlib
import json
import os
import sys

import boto3
import botocore.exceptions
from botocore.config import Config

op, key = sys.argv[1], sys.argv[2]
env = os.environ
kwargs = {}
if env.get("T_AK"):
    kwargs = dict(
        aws_access_key_id=env["T_AK"],
        aws_secret_access_key=env["T_SK"],
        aws_session_token=env.get("T_ST") or None,
    )
session = boto3.session.Session(**kwargs)
s3 = session.client(
    "s3",
    endpoint_url=env["T_S3_ENDPOINT"],
    region_name=env["T_REGION"],
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)
body = hashlib.sha256(key.encode()).digest() * 1000
out = {}
try:
    if op == "put":
        s3.put_object(Bucket=env["T_BUCKET"], Key=key, Body=body)
    elif op == "get":
        got = s3.get_object(Bucket=env["T_BUCKET"], Key=key)["Body"].read()
        out["same"] = got == body
    elif op == "delete":
        s3.delete_object(Bucket=env["T_BUCKET"], Key=key)
    else:
        raise SystemExit(f"unknown op {op}")
    out["ok"] = True
except botocore.exceptions.ClientError as e:
    out["ok"] = False
    out["code"] = e.response.get("Error", {}).get("Code")
    out["status"] = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    out["message"] = e.response.get("Error", {}).get("Message")
creds = session.get_credentials()
out["access_key_id"] = creds.access_key if creds else None
out["method"] = creds.method if creds else None
print(json.dumps(out))
