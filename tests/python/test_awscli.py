"""The aws cli (from PyPI) against a running cache node: s3api get/put with ranges, s3 ls,
s3 cp (multipart above 8 MiB), presign."""

import json
import os
import subprocess
import urllib.request

from conftest import BUCKET


def aws(node, *args, check=True):
    cmd = ["aws", "--endpoint-url", node.url, *args]
    r = subprocess.run(cmd, env=node.env(), capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def test_s3api_put_and_ranged_get(node, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(200_000)
    src.write_bytes(data)
    aws(node, "s3api", "put-object", "--bucket", BUCKET, "--key", "cli/obj.bin", "--body", str(src))
    out = tmp_path / "range.bin"
    r = aws(node, "s3api", "get-object", "--bucket", BUCKET, "--key", "cli/obj.bin", "--range", "bytes=100-70000", str(out))
    meta = json.loads(r.stdout)
    assert meta["ContentRange"] == f"bytes 100-70000/{len(data)}"
    assert out.read_bytes() == data[100:70001]
    r = aws(node, "s3api", "head-object", "--bucket", BUCKET, "--key", "cli/obj.bin")
    assert json.loads(r.stdout)["ContentLength"] == len(data)
    r = aws(node, "s3api", "get-object", "--bucket", BUCKET, "--key", "cli/missing", str(tmp_path / "x"), check=False)
    assert r.returncode != 0 and "NoSuchKey" in r.stderr


def test_s3_cp_ls_multipart(node, tmp_path):
    big = tmp_path / "big.bin"
    data = os.urandom(20 * 1024 * 1024 + 3)  # above the cli's 8 MiB multipart threshold
    big.write_bytes(data)
    aws(node, "s3", "cp", str(big), f"s3://{BUCKET}/cli/big.bin")
    r = aws(node, "s3", "ls", f"s3://{BUCKET}/cli/")
    assert "big.bin" in r.stdout and str(len(data)) in r.stdout
    back = tmp_path / "back.bin"
    aws(node, "s3", "cp", f"s3://{BUCKET}/cli/big.bin", str(back))
    assert back.read_bytes() == data
    r = aws(node, "s3", "ls")
    assert BUCKET in r.stdout
    # Bucket-to-bucket copy above 8 MiB: the cli uses UploadPartCopy.
    aws(node, "s3", "cp", f"s3://{BUCKET}/cli/big.bin", f"s3://{BUCKET}/cli/big-copy.bin")
    copy = tmp_path / "copy.bin"
    aws(node, "s3", "cp", f"s3://{BUCKET}/cli/big-copy.bin", str(copy))
    assert copy.read_bytes() == data


def test_presign(node):
    aws(node, "s3api", "put-object", "--bucket", BUCKET, "--key", "cli/p.txt", "--body", __file__)
    url = aws(node, "s3", "presign", f"s3://{BUCKET}/cli/p.txt", "--expires-in", "60").stdout.strip()
    with urllib.request.urlopen(url) as r:
        assert r.read() == open(__file__, "rb").read()
