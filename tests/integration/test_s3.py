"""The S3 server requires keys, like a factory's object store."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError


def client(stack_info, **credentials):
    return boto3.client("s3", endpoint_url=stack_info["s3"]["endpoint_url"], region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, **credentials.pop("config", {})),
                        **credentials)


@pytest.fixture
def s3(stack_info):
    return client(stack_info, aws_access_key_id=stack_info["s3"]["access_key"],
                  aws_secret_access_key=stack_info["s3"]["secret_key"])


def test_stack_buckets_exist(s3, stack_info):
    names = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    assert set(stack_info["s3"]["buckets"]) <= names


def test_put_and_get_with_keys(s3):
    key = f"tests/{uuid.uuid4().hex}.bin"
    payload = uuid.uuid4().bytes * 1000
    s3.put_object(Bucket="datasets", Key=key, Body=payload)
    try:
        assert s3.get_object(Bucket="datasets", Key=key)["Body"].read() == payload
    finally:
        s3.delete_object(Bucket="datasets", Key=key)


def test_anonymous_requests_are_refused(s3, stack_info):
    key = f"tests/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket="datasets", Key=key, Body=b"private")
    anonymous = client(stack_info, config={"signature_version": UNSIGNED})
    try:
        with pytest.raises(ClientError) as read_error:
            anonymous.get_object(Bucket="datasets", Key=key)
        assert read_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError):
            anonymous.put_object(Bucket="datasets", Key=key + ".2", Body=b"x")
        with pytest.raises(ClientError):
            anonymous.list_objects_v2(Bucket="datasets")
    finally:
        s3.delete_object(Bucket="datasets", Key=key)


def test_wrong_secret_is_refused(stack_info):
    impostor = client(stack_info, aws_access_key_id=stack_info["s3"]["access_key"],
                      aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as error:
        impostor.list_objects_v2(Bucket="datasets")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_objects_are_not_readable_around_s3_through_the_filer(s3):
    """SeaweedFS's filer would serve bucket files over plain HTTP without keys; the stack turns it off."""
    import urllib.error
    import urllib.request

    from stack.settings import HOST, PORTS

    key = f"tests/{uuid.uuid4().hex}.txt"
    s3.put_object(Bucket="datasets", Key=key, Body=b"private")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{HOST}:{PORTS['seaweed_filer']}/buckets/datasets/{key}", timeout=5)
        assert refused.value.code in (403, 404)
    finally:
        s3.delete_object(Bucket="datasets", Key=key)
