"""boto3 and pylance through the router in front of two cache nodes: every byte as from
the origin, writes seen on every node, a stopped node costs no read."""

import os

import boto3
import numpy as np
import pyarrow as pa
from botocore.config import Config

from conftest import ACCESS_KEY, BUCKET, SECRET_KEY


def client(url):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def test_ranges_writes_and_lists_through_the_router(fleet):
    s3 = client(fleet.url)
    data = os.urandom(1_000_000)  # 16 pages of 64 KiB over two nodes
    s3.put_object(Bucket=BUCKET, Key="r/t.lance/data/a.lance", Body=data)
    assert s3.get_object(Bucket=BUCKET, Key="r/t.lance/data/a.lance")["Body"].read() == data
    for a, b in [(0, 0), (65530, 65545), (100_000, 900_000)]:
        got = s3.get_object(Bucket=BUCKET, Key="r/t.lance/data/a.lance", Range=f"bytes={a}-{b}")
        assert got["ContentRange"] == f"bytes {a}-{b}/{len(data)}"
        assert got["Body"].read() == data[a:b + 1]
    # Overwrite through the router: both nodes must stop serving the old bytes.
    new = os.urandom(700_000)
    s3.put_object(Bucket=BUCKET, Key="r/t.lance/data/a.lance", Body=new)
    assert s3.get_object(Bucket=BUCKET, Key="r/t.lance/data/a.lance")["Body"].read() == new
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="r/")["Contents"]]
    assert keys == ["r/t.lance/data/a.lance"]


def test_pylance_through_the_router(fleet):
    import lance

    opts = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY, "aws_endpoint": fleet.url,
            "aws_region": "us-east-1", "allow_http": "true"}
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((2000, 16)).astype(np.float32)
    table = pa.table({"id": pa.array(np.arange(2000)), "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), 16)})
    lance.write_dataset(table, f"s3://{BUCKET}/r/frames.lance", storage_options=opts)
    via = lance.dataset(f"s3://{BUCKET}/r/frames.lance", storage_options=opts)
    direct = lance.dataset(str(fleet.origin / BUCKET / "r/frames.lance"))
    a = via.to_table(nearest={"column": "vector", "q": vecs[42], "k": 5}, columns=["id"])["id"].to_pylist()
    b = direct.to_table(nearest={"column": "vector", "q": vecs[42], "k": 5}, columns=["id"])["id"].to_pylist()
    assert a == b and a[0] == 42


def test_sighup_reloads_membership(fleet):
    import json
    import signal
    import time
    import urllib.request

    from conftest import ROUTER_TOKEN

    def members():
        req = urllib.request.Request(f"{fleet.url}/_lakecache/admin/nodes", headers={"Authorization": f"Bearer {ROUTER_TOKEN}"})
        with urllib.request.urlopen(req) as r:
            return [n["id"] for n in json.load(r)["nodes"]]

    def reload_until(want):
        fleet.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if members() == want:
                return
            time.sleep(0.05)
        raise AssertionError(f"membership is {members()}, expected {want}")

    s3 = client(fleet.url)
    data = os.urandom(300_000)
    s3.put_object(Bucket=BUCKET, Key="r/reload.bin", Body=data)
    assert members() == ["cache-0", "cache-1"]
    fleet.write_config(fleet.nodes[:1])
    reload_until(["cache-0"])
    assert s3.get_object(Bucket=BUCKET, Key="r/reload.bin")["Body"].read() == data
    fleet.write_config(fleet.nodes)
    reload_until(["cache-0", "cache-1"])
    assert s3.get_object(Bucket=BUCKET, Key="r/reload.bin")["Body"].read() == data


def test_a_stopped_node_costs_no_read(fleet):
    s3 = client(fleet.url)
    data = os.urandom(600_000)
    s3.put_object(Bucket=BUCKET, Key="r/failover.bin", Body=data)
    assert s3.get_object(Bucket=BUCKET, Key="r/failover.bin")["Body"].read() == data
    fleet.nodes[1].stop()
    for i in range(30):
        a = (i * 17_000) % 500_000
        got = s3.get_object(Bucket=BUCKET, Key="r/failover.bin", Range=f"bytes={a}-{a + 90_000}")["Body"].read()
        assert got == data[a:a + 90_001]
