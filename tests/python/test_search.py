"""The real `lancedb` client (PyPI) against a search node that reads its tables through
two cache nodes: every answer equals the same query run by pylance on the origin."""

import json
import urllib.error
import urllib.request

import lance
import lancedb
import numpy as np
import pyarrow as pa
import pytest

from conftest import BUCKET, SEARCH_KEY

DIM = 16
WORDS = ["harbor", "sunset", "mountain", "river", "city", "forest", "desert", "snow", "bridge", "market"]


def make_table(n, seed, start=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, DIM)).astype(np.float32) * 4
    vecs = centers[rng.integers(0, 8, n)] + rng.standard_normal((n, DIM)).astype(np.float32)
    text = [f"{WORDS[i % 10]} {WORDS[(i * 7) % 10]} frame {i}" for i in range(start, start + n)]
    return pa.table({
        "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM),
        "text": pa.array(text),
        "category": pa.array([["a", "b", "c"][i % 3] for i in range(start, start + n)]),
    })


@pytest.fixture(scope="module")
def items(search):
    """`items`: 3000 rows with an IVF_PQ vector index and an FTS index, written to the origin."""
    path = search.fleet.origin / BUCKET / "tables" / "items.lance"
    ds = lance.write_dataset(make_table(3000, 1), str(path))
    ds.create_index("vector", index_type="IVF_PQ", num_partitions=8, num_sub_vectors=4)
    ds.create_scalar_index("text", index_type="INVERTED")
    return path


def connect(search, key=SEARCH_KEY):
    return lancedb.connect("db://lakecache", api_key=key, host_override=search.url)


def direct(path):
    return lance.dataset(str(path))


def test_open_describe_and_count(search, items):
    db = connect(search)
    assert "items" in db.table_names()
    t = db.open_table("items")
    assert t.count_rows() == 3000
    assert t.count_rows("category = 'a'") == direct(items).count_rows("category = 'a'") == 1000
    assert t.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert t.version == direct(items).version


def test_vector_search_with_filter_equals_pylance(search, items):
    t = connect(search).open_table("items")
    q = make_table(1, 99)["vector"][0].values.to_numpy()
    got = t.search(q).where("category != 'b'").limit(10).nprobes(8).to_arrow()
    want = direct(items).to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": 8},
                                  filter="category != 'b'", prefilter=True)
    assert got["id"].to_pylist() == want["id"].to_pylist()
    assert np.allclose(got["_distance"].to_numpy(), want["_distance"].to_numpy())
    assert all(c != "b" for c in got["category"].to_pylist())


def test_full_text_search_equals_pylance(search, items):
    t = connect(search).open_table("items")
    got = t.search("harbor", query_type="fts").limit(20).to_arrow()
    want = direct(items).to_table(full_text_query="harbor", limit=20)
    assert len(got) == 20
    assert sorted(got["id"].to_pylist()) == sorted(want["id"].to_pylist())
    assert all("harbor" in s for s in got["text"].to_pylist())


def test_hybrid_search(search, items):
    t = connect(search).open_table("items")
    q = make_table(1, 7)["vector"][0].values.to_numpy()
    got = t.search(query_type="hybrid").vector(q).text("sunset").limit(10).to_arrow()
    assert 0 < len(got) <= 10
    assert "_relevance_score" in got.column_names
    ds = direct(items)
    vec = set(ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": 20})["id"].to_pylist())
    fts = set(ds.to_table(full_text_query="sunset", limit=10)["id"].to_pylist())
    assert set(got["id"].to_pylist()) <= vec | fts


def test_add_rows_and_create_index(search):
    db = connect(search)
    t = db.create_table("clips", make_table(300, 3))
    assert t.count_rows() == 300
    t.add(make_table(200, 4, start=300))
    assert t.count_rows() == 500
    # The write went through the fleet to the origin.
    assert lance.dataset(str(search.fleet.origin / BUCKET / "tables" / "clips.lance")).count_rows() == 500
    t.create_scalar_index("id")
    names = [i.name for i in t.list_indices()]
    assert "id_idx" in names
    assert t.search().where("id = 420").to_arrow()["id"].to_pylist() == [420]


def _post(search, path, body, key=SEARCH_KEY, accept="application/json"):
    req = urllib.request.Request(f"{search.url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"x-api-key": key, "content-type": "application/json", "accept": accept})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_errors_are_json_with_the_right_status(search, items):
    assert _post(search, "/v1/table/nope/describe/", {})[0] == 404
    status, body = _post(search, "/v1/table/items/query/", {"vector": [0.1] * 3, "k": 5})
    assert status == 400 and "dimension" in body["message"]
    status, body = _post(search, "/v1/table/items/query/", {"vector": [], "filter": "id >>> 3", "k": 5})
    assert status == 400 and body["message"]
    assert _post(search, "/v1/table/items/count_rows/", {}, key="wrong")[0] == 401
    with pytest.raises(Exception, match="401"):
        connect(search, key="wrong").open_table("items")


def test_json_rows_and_sql(search, items):
    status, rows = _post(search, "/v1/table/items/query/", {"vector": [], "filter": "id < 3", "k": 10, "columns": ["id", "category"]})
    assert status == 200 and rows == [{"id": 0, "category": "a"}, {"id": 1, "category": "b"}, {"id": 2, "category": "c"}]
    status, rows = _post(search, "/v1/sql", {"sql": "SELECT category, count(*) AS n FROM items GROUP BY category ORDER BY category"})
    assert status == 200 and rows == [{"category": "a", "n": 1000}, {"category": "b", "n": 1000}, {"category": "c", "n": 1000}]
