"""boto3 against a running cache node: get, put, list, ranges, conditional and multipart
writes, presigned URLs, errors."""

import hashlib
import os
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import BUCKET


def code(e: ClientError):
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def test_put_get_head_range(s3):
    data = os.urandom(300_000)
    s3.put_object(Bucket=BUCKET, Key="boto/a.bin", Body=data, ContentType="application/x-test")
    got = s3.get_object(Bucket=BUCKET, Key="boto/a.bin")
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    head = s3.head_object(Bucket=BUCKET, Key="boto/a.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == got["ETag"]
    for rng, a, b in [("bytes=0-9", 0, 9), ("bytes=65530-65545", 65530, 65545), ("bytes=-100", len(data) - 100, len(data) - 1),
                      ("bytes=299990-", 299990, len(data) - 1)]:
        r = s3.get_object(Bucket=BUCKET, Key="boto/a.bin", Range=rng)
        assert r["ContentRange"] == f"bytes {a}-{b}/{len(data)}"
        assert r["Body"].read() == data[a:b + 1]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="boto/a.bin", Range=f"bytes={len(data)}-")
    assert code(e.value) == ("InvalidRange", 416)


def test_errors(s3):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="boto/missing")
    assert code(e.value) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="no-such-bucket", Key="x")
    assert code(e.value)[1] == 404


def test_list_pagination(s3):
    keys = [f"boto/list/{i:03d}" for i in range(25)]
    for k in keys:
        s3.put_object(Bucket=BUCKET, Key=k, Body=b"x")
    seen = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="boto/list/", PaginationConfig={"PageSize": 7}):
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert seen == keys
    d = s3.list_objects_v2(Bucket=BUCKET, Prefix="boto/", Delimiter="/")
    assert "boto/list/" in [p["Prefix"] for p in d.get("CommonPrefixes", [])]


def test_conditional_put(s3):
    s3.put_object(Bucket=BUCKET, Key="boto/cond", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="boto/cond", Body=b"second", IfNoneMatch="*")
    assert code(e.value)[1] == 412
    assert s3.get_object(Bucket=BUCKET, Key="boto/cond")["Body"].read() == b"first"


def test_multipart_via_upload_fileobj(s3, tmp_path):
    from boto3.s3.transfer import TransferConfig
    import io

    data = os.urandom(12 * 1024 * 1024 + 5)
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(data), BUCKET, "boto/multi.bin", Config=cfg)
    got = s3.get_object(Bucket=BUCKET, Key="boto/multi.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    out = tmp_path / "down.bin"
    s3.download_file(BUCKET, "boto/multi.bin", str(out), Config=cfg)  # parallel ranged GETs
    assert out.read_bytes() == data


def test_overwrite_is_seen(s3):
    for i in range(4):
        body = f"version {i} ".encode() * (i + 1000)
        s3.put_object(Bucket=BUCKET, Key="boto/over", Body=body)
        assert s3.get_object(Bucket=BUCKET, Key="boto/over")["Body"].read() == body


def test_presigned_get_and_put(s3, node):
    import boto3
    from botocore.config import Config

    from conftest import ACCESS_KEY, SECRET_KEY

    # This botocore presigns with SigV2 query auth by default; SigV4 on request.
    v4 = boto3.client("s3", endpoint_url=node.url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                      region_name="us-east-1", config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    for i, client in enumerate((s3, v4)):
        key = f"boto/presigned-{i}"
        put_url = client.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=60)
        req = urllib.request.Request(put_url, data=b"via presigned put", method="PUT")
        req.add_header("Content-Type", "")  # SigV2 signs Content-Type; the URL was signed without one
        with urllib.request.urlopen(req) as r:
            assert r.status == 200
        get_url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=60)
        with urllib.request.urlopen(get_url) as r:
            assert r.read() == b"via presigned put"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(get_url.replace(key, key + "x"))
        assert e.value.code == 403


def test_delete(s3):
    s3.put_object(Bucket=BUCKET, Key="boto/del1", Body=b"1")
    s3.put_object(Bucket=BUCKET, Key="boto/del2", Body=b"2")
    s3.delete_object(Bucket=BUCKET, Key="boto/del1")
    r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "boto/del2"}, {"Key": "boto/none"}]})
    assert len(r.get("Deleted", [])) == 2
    for k in ("boto/del1", "boto/del2"):
        with pytest.raises(ClientError):
            s3.head_object(Bucket=BUCKET, Key=k)


def test_attributes_round_trip(s3):
    from datetime import datetime, timezone

    exp = datetime(2033, 5, 18, 3, 33, 20, tzinfo=timezone.utc)
    s3.put_object(Bucket=BUCKET, Key="boto/attrs.csv.gz", Body=b"gz", ContentType="text/csv", ContentEncoding="gzip",
                  CacheControl="max-age=60", ContentDisposition="attachment", ContentLanguage="de", Expires=exp,
                  Metadata={"owner": "team-a"})
    for r in (s3.head_object(Bucket=BUCKET, Key="boto/attrs.csv.gz"), s3.get_object(Bucket=BUCKET, Key="boto/attrs.csv.gz")):
        assert r["ContentType"] == "text/csv"
        assert r["ContentEncoding"] == "gzip"
        assert r["CacheControl"] == "max-age=60"
        assert r["ContentDisposition"] == "attachment"
        assert r["ContentLanguage"] == "de"
        assert r["Metadata"] == {"owner": "team-a"}
        assert r["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 18 May 2033 03:33:20 GMT"
    s3.copy_object(Bucket=BUCKET, Key="boto/attrs-copy", CopySource=f"{BUCKET}/boto/attrs.csv.gz",
                   MetadataDirective="REPLACE", ContentType="application/json", Metadata={"fresh": "yes"})
    h = s3.head_object(Bucket=BUCKET, Key="boto/attrs-copy")
    assert h["ContentType"] == "application/json"
    assert h["Metadata"] == {"fresh": "yes"}
    assert "ContentEncoding" not in h
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=BUCKET, Key="boto/attrs-copy", CopySource=f"{BUCKET}/boto/attrs-copy")
    assert code(e.value) == ("InvalidRequest", 400)


def test_bad_digests_store_nothing(s3):
    import base64

    s3.put_object(Bucket=BUCKET, Key="boto/digest", Body=b"original")
    bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="boto/digest", Body=b"replacement", ContentMD5=bad_md5)
    assert code(e.value) == ("BadDigest", 400)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="boto/digest", Body=b"replacement", ChecksumSHA256=base64.b64encode(b"\0" * 32).decode())
    assert code(e.value) == ("BadDigest", 400)
    assert s3.get_object(Bucket=BUCKET, Key="boto/digest")["Body"].read() == b"original"
    good = base64.b64encode(hashlib.md5(b"replacement").digest()).decode()
    s3.put_object(Bucket=BUCKET, Key="boto/digest", Body=b"replacement", ContentMD5=good)
    assert s3.get_object(Bucket=BUCKET, Key="boto/digest")["Body"].read() == b"replacement"


def test_retried_complete_and_listing_details(s3):
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="boto/retried", ContentType="text/plain")
    p = s3.upload_part(Bucket=BUCKET, Key="boto/retried", UploadId=up["UploadId"], PartNumber=1, Body=b"part")
    parts = {"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]}
    first = s3.complete_multipart_upload(Bucket=BUCKET, Key="boto/retried", UploadId=up["UploadId"], MultipartUpload=parts)
    again = s3.complete_multipart_upload(Bucket=BUCKET, Key="boto/retried", UploadId=up["UploadId"], MultipartUpload=parts)
    assert first["ETag"] == again["ETag"]
    assert s3.head_object(Bucket=BUCKET, Key="boto/retried")["ContentType"] == "text/plain"

    s3.put_object(Bucket=BUCKET, Key="boto/sp ace/x", Body=b"x")
    v1 = s3.list_objects(Bucket=BUCKET, Prefix="boto/sp ace/")  # botocore asks for encoding-type=url
    assert v1["Prefix"] == "boto/sp ace/"
    assert [o["Key"] for o in v1["Contents"]] == ["boto/sp ace/x"]
    assert "Owner" in v1["Contents"][0]
    v2 = s3.list_objects_v2(Bucket=BUCKET, Prefix="boto/sp ace/", FetchOwner=True)
    assert "Owner" in v2["Contents"][0]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="boto/", MaxKeys=0)["IsTruncated"] is False
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="boto/sp ace/", ContinuationToken="")["KeyCount"] == 1


def test_not_modified_has_etag(s3):
    s3.put_object(Bucket=BUCKET, Key="boto/304", Body=b"v")
    etag = s3.head_object(Bucket=BUCKET, Key="boto/304")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="boto/304", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"].get("etag") == etag
