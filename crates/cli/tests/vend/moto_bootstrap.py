"""Bootstraps moto's server in auth mode for the sts driver tests.

moto starts with INITIAL_NO_AUTH_ACTION_COUNT=6: the six calls below run before it
checks signatures; every later call must be signed by a known key. Prints one JSON
line: the user's key (which the vending service signs AssumeRole with), the role
and the bucket.
"""
import json
import sys

import boto3
from botocore.config import Config

endpoint = sys.argv[1]
anon = dict(
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="bootstrap",
    aws_secret_access_key="bootstrap",
    config=Config(retries={"max_attempts": 1}),
)
iam = boto3.client("iam", **anon)
iam.create_user(UserName="vend")
iam.put_user_policy(
    UserName="vend",
    PolicyName="assume",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}
    ),
)
key = iam.create_access_key(UserName="vend")["AccessKey"]
role = iam.create_role(
    RoleName="artifacts",
    AssumeRolePolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:user/vend"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    ),
)["Role"]
iam.put_role_policy(
    RoleName="artifacts",
    PolicyName="s3",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    ),
)
boto3.client("s3", **anon).create_bucket(Bucket="artifacts")
print(
    json.dumps(
        {
            "access_key_id": key["AccessKeyId"],
            "secret_access_key": key["SecretAccessKey"],
            "role_arn": role["Arn"],
            "bucket": "artifacts",
        }
    )
)
