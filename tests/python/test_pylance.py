"""pylance writes a Lance table through the cache node, then reads it back through the node
(scan, vector search, filter) with results identical to reading the origin directly."""

import numpy as np
import pyarrow as pa
import pytest

from conftest import ACCESS_KEY, BUCKET, SECRET_KEY

lance = pytest.importorskip("lance")


def storage_options(node):
    return {
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_endpoint": node.url,
        "aws_region": "us-east-1",
        "allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
    }


def make_table(n=4000, dim=32, seed=7):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "caption": pa.array([f"frame {i} of clip {i // 100}" for i in range(n)]),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim),
        }
    ), vecs


def test_write_through_endpoint_and_read_back_identically(node):
    uri = f"s3://{BUCKET}/lance/frames.lance"
    table, vecs = make_table()
    opts = storage_options(node)
    lance.write_dataset(table, uri, storage_options=opts, max_rows_per_file=1500)
    # A second version through the endpoint (append = a conditional manifest commit).
    extra, _ = make_table(n=500, seed=8)
    extra = extra.set_column(0, "id", pa.array(np.arange(4000, 4500, dtype=np.int64)))
    lance.write_dataset(extra, uri, storage_options=opts, mode="append")

    via_node = lance.dataset(uri, storage_options=opts)
    direct = lance.dataset(str(node.origin / BUCKET / "lance/frames.lance"))
    assert via_node.version == direct.version == 2
    assert via_node.count_rows() == direct.count_rows() == 4500
    assert via_node.to_table().sort_by("id").equals(direct.to_table().sort_by("id"))

    q = vecs[123]
    a = via_node.to_table(nearest={"column": "vector", "q": q, "k": 10}, columns=["id"])
    b = direct.to_table(nearest={"column": "vector", "q": q, "k": 10}, columns=["id"])
    assert a["id"].to_pylist() == b["id"].to_pylist()
    assert a["id"][0].as_py() == 123

    f1 = via_node.to_table(filter="id % 97 = 0", columns=["id", "caption"]).sort_by("id")
    f2 = direct.to_table(filter="id % 97 = 0", columns=["id", "caption"]).sort_by("id")
    assert f1.equals(f2) and f1.num_rows == 47


def test_index_built_through_endpoint(node):
    uri = f"s3://{BUCKET}/lance/indexed.lance"
    table, vecs = make_table(n=3000, dim=16, seed=3)
    opts = storage_options(node)
    ds = lance.write_dataset(table, uri, storage_options=opts)
    ds.create_index("vector", index_type="IVF_PQ", num_partitions=4, num_sub_vectors=4)
    via_node = lance.dataset(uri, storage_options=opts)
    direct = lance.dataset(str(node.origin / BUCKET / "lance/indexed.lance"))
    assert len(via_node.describe_indices()) == 1
    for i in (0, 17, 2999):
        q = vecs[i]
        a = via_node.to_table(nearest={"column": "vector", "q": q, "k": 5, "nprobes": 4}, columns=["id"])
        b = direct.to_table(nearest={"column": "vector", "q": q, "k": 5, "nprobes": 4}, columns=["id"])
        assert a["id"].to_pylist() == b["id"].to_pylist()
