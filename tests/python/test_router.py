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
    # Calls the router passes to a node as they came: ListBuckets, ListObjects v1, HeadBucket.
    assert BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert [o["Key"] for o in s3.list_objects(Bucket=BUCKET, Prefix="r/")["Contents"]] == ["r/t.lance/data/a.lance"]
    s3.head_bucket(Bucket=BUCKET)


def test_multipart_with_gaps_and_list_parts_through_the_router(fleet):
    s3 = client(fleet.url)
    key = "r/mp.bin"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"old")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"old"
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    a, b = os.urandom(5 * 1024 * 1024), os.urandom(70_000)
    e2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=2, Body=a)["ETag"]
    e5 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=5, Body=b)["ETag"]
    parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(2, len(a)), (5, len(b))]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 5, "ETag": e5}]})
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == a + b


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


def _router_nodes(fleet):
    import json
    import urllib.request

    from conftest import ROUTER_TOKEN

    req = urllib.request.Request(f"{fleet.url}/_lakecache/admin/nodes", headers={"Authorization": f"Bearer {ROUTER_TOKEN}"})
    with urllib.request.urlopen(req) as r:
        return {n["id"]: n["healthy"] for n in json.load(r)["nodes"]}


def _upstream_gets(fleet, node_id):
    import urllib.request

    with urllib.request.urlopen(f"{fleet.url}/metrics") as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("router_upstream_requests_total{") and f'node="{node_id}"' in line and 'op="get"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_kill9_of_a_node_under_a_read_loop(tmp_path):
    """A cache node process killed with SIGKILL while two threads read through the router:
    no read fails or differs (the client does not retry), the node is ejected, and once
    restarted it rejoins and serves its pages again."""
    import threading
    import time

    from conftest import Fleet

    f = Fleet(tmp_path, nodes=3)
    try:
        strict = boto3.client("s3", endpoint_url=f.url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                              region_name="us-east-1",
                              config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
        objects = {f"k9/obj{i}.bin": os.urandom(500_000) for i in range(6)}
        for k, v in objects.items():
            strict.put_object(Bucket=BUCKET, Key=k, Body=v)
            assert strict.get_object(Bucket=BUCKET, Key=k)["Body"].read() == v
        keys = sorted(objects)
        victim = f.nodes[1]
        failures, reads = [], [0, 0]
        deadline = time.time() + 30

        def loop(t):
            for i in range(150):
                if time.time() > deadline:
                    break
                k = keys[(i + t) % len(keys)]
                a = (i * 7919 + t * 104_729) % 400_000
                try:
                    got = strict.get_object(Bucket=BUCKET, Key=k, Range=f"bytes={a}-{a + 99_999}")["Body"].read()
                    if got != objects[k][a:a + 100_000]:
                        failures.append(f"wrong bytes: {k} {a}")
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append(repr(e))
                reads[t] += 1

        threads = [threading.Thread(target=loop, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        victim.kill9()
        for t in threads:
            t.join()
        assert reads[0] + reads[1] >= 100, reads
        assert not failures, failures[:5]
        for _ in range(100):
            if not _router_nodes(f)["cache-1"]:
                break
            time.sleep(0.05)
        assert _router_nodes(f) == {"cache-0": True, "cache-1": False, "cache-2": True}

        victim.start()
        for _ in range(100):
            if _router_nodes(f)["cache-1"]:
                break
            time.sleep(0.05)
        assert _router_nodes(f)["cache-1"], "the restarted node rejoined"
        before = _upstream_gets(f, "cache-1")
        for k, v in objects.items():
            assert strict.get_object(Bucket=BUCKET, Key=k)["Body"].read() == v
        assert _upstream_gets(f, "cache-1") > before, "the rejoined node owns its pages again"
    finally:
        f.stop()
