"""Safety of the search node (issue 10, items 1-4), against the real `search-node` binary as a
subprocess, with the real `lancedb` client where it can send the request and raw HTTP where it
cannot: requests that used to abort the process are refused and the process answers the next
query correctly; expressions with trailing text are refused and change nothing; answers are
bounded in rows, bytes and SQL memory; errors carry no paths of the build machine."""

import json
import subprocess
import time
import urllib.error
import urllib.request

import lance
import lancedb
import lancedb.remote.errors
import numpy as np
import pyarrow as pa
import pytest

from conftest import BUCKET, FLEET_TOML, SEARCH_KEY, Fleet, _binary, _free_port, _wait_healthy

ROWS = 1000
DIM = 8
MAX_ROWS = 5000
# The limits this node runs with: small, so that passing them is quick.
LIMITS_TOML = f"""[limits]
max_result_rows = {MAX_ROWS}
max_result_bytes = "4 MiB"
sql_memory = "64 MiB"
"""
INTERNAL = (".rs:", "/src/", ".cargo", "/root/")


class LimitedSearchNode:
    """A search node like conftest's, with the [limits] above."""

    def __init__(self, tmp, nodes):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        members = "".join(f'[[nodes]]\nid = "cache-{i}"\nurl = "{n.url}"\n' for i, n in enumerate(nodes))
        cfg = tmp / "search-node.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
read_consistency_interval = "1s"
[auth]
api_keys = ["{SEARCH_KEY}"]
[[namespaces]]
name = ""
uri = "s3://{BUCKET}/tables"
{LIMITS_TOML}{FLEET_TOML}{members}"""
        )
        self.log_path = tmp / "search-node.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([_binary("LAKECACHE_SEARCH_NODE_BIN", "search-node"), "--config", str(cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.proc, self.log_path)

    def rss_kib(self) -> int:
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("search-safety")
    fleet = Fleet(base)
    try:
        s = LimitedSearchNode(base, fleet.nodes)
    except Exception:
        fleet.stop()
        raise
    s.fleet = fleet
    tables = fleet.origin / BUCKET / "tables"
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    lance.write_dataset(pa.table({
        "id": pa.array(np.arange(ROWS, dtype=np.int64)),
        "clip": pa.array(np.arange(ROWS, dtype=np.int64) % 20),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM),
        "text": pa.array([f"frame {i} of clip {i % 20}" for i in range(ROWS)]),
    }), str(tables / "clips.lance"))
    ds = lance.dataset(str(tables / "clips.lance"))
    ds.create_scalar_index("text", index_type="INVERTED")
    ds.create_index("vector", index_type="IVF_PQ", num_partitions=2, num_sub_vectors=2)
    ds.create_scalar_index("id", index_type="BTREE")
    # One row more than an answer may hold.
    lance.write_dataset(pa.table({"id": pa.array(np.arange(MAX_ROWS + 1, dtype=np.int64))}), str(tables / "wide.lance"))
    yield s
    s.stop()
    fleet.stop()


def connect(node):
    return lancedb.connect("db://lakecache", api_key=SEARCH_KEY, host_override=node.url)


def post(node, path, body, timeout=30):
    req = urllib.request.Request(f"{node.url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"x-api-key": SEARCH_KEY, "content-type": "application/json",
                                          "accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_alive_and_correct(node):
    """The process is the same one, and answers a query correctly."""
    assert node.proc.poll() is None, f"the search node exited ({node.proc.returncode}):\n{node.log_path.read_text()[-3000:]}"
    t = connect(node).open_table("clips")
    assert t.count_rows() == ROWS
    assert t.count_rows("clip < 10") == ROWS // 2


def chain(term, op, n):
    return op.join([term] * n)


def test_requests_that_aborted_the_process_are_refused_and_it_keeps_serving(node):
    vector = [0.5] * DIM
    crashing = [
        ("/v1/sql", {"sql": "SELECT " + chain("1", "+", 1000)}, "256 levels"),
        ("/v1/sql", {"sql": "WITH a0 AS (SELECT 1 AS x), " + ", ".join(f"a{i} AS (SELECT x FROM a{i - 1})" for i in range(1, 1300))
                     + " SELECT x FROM a1299"}, "128 SELECTs and table references"),
        ("/v1/table/clips/query/", {"vector": [], "k": 10, "filter": chain("clip = 1", " OR ", 60_000)}, "4096 operators"),
        ("/v1/table/clips/count_rows/", {"predicate": chain("clip = 1", " OR ", 1000)}, "256 levels"),
        ("/v1/table/clips/query/", {"vector": vector, "k": 1, "refine_factor": 4294967295}, "refine_factor"),
        ("/v1/table/clips/query/", {"vector": vector, "k": 100_000, "refine_factor": 100_000}, "refine_factor"),
        ("/v1/table/clips/query/", {"vector": vector, "k": 5, "ef": 2**62}, "ef may be at most"),
        ("/v1/table/clips/query/", {"vector": [[]] * 200_000, "k": 1}, "query vectors"),
    ]
    for path, body, limit in crashing:
        started = time.time()
        status, answer = post(node, path, body)
        assert status == 400, (path, status, answer)
        assert limit in answer["message"], answer
        assert time.time() - started < 10
        assert_alive_and_correct(node)
    # Deep, but within the limit: answered, correctly.
    status, n = post(node, "/v1/table/clips/count_rows/", {"predicate": chain("clip = 3", " OR ", 250)})
    assert (status, n) == (200, ROWS // 20)
    deep_or = " OR ".join(f"id = {i}" for i in range(250))
    status, rows = post(node, "/v1/table/clips/query/", {"vector": [0.5] * DIM, "k": 300, "filter": deep_or})
    assert status == 200 and sorted(r["id"] for r in rows) == list(range(250))
    status, rows = post(node, "/v1/sql", {"sql": "SELECT " + chain("1", "+", 250) + " AS s"})
    assert (status, rows) == (200, [{"s": 250}])


def test_expressions_with_trailing_text_are_refused_and_change_nothing(node):
    t = connect(node).open_table("clips")
    version = t.version
    with pytest.raises(Exception, match="Expected: EOF"):
        t.delete("id >= 0) AND (id > 100")
    assert t.count_rows() == ROWS
    assert t.version == version
    with pytest.raises(Exception, match="Expected: EOF"):
        t.count_rows("clip < 10 garbage")
    with pytest.raises(Exception, match="Expected: EOF"):
        t.search().where("clip < 10) OR (clip >= 0").limit(2000).to_arrow()
    with pytest.raises(Exception, match="Expected: EOF"):
        t.search([0.5] * DIM).where("clip < 10 garbage", prefilter=True).limit(5).to_arrow()
    for path, body in [
        ("/v1/table/clips/delete/", {"predicate": "clip < 10 garbage"}),
        ("/v1/table/clips/count_rows/", {"predicate": "clip < 10) OR (clip >= 0"}),
        ("/v1/table/clips/query/", {"vector": [], "k": 10, "columns": {"x": "id + 1 garbage"}}),
        ("/v1/table/clips/query/", {"vector": [], "k": 10, "filter": "clip < 10 ORDER BY id"}),
    ]:
        status, answer = post(node, path, body)
        assert status == 400 and "Expected: EOF" in answer["message"], (path, body, answer)
    assert lance.dataset(str(node.fleet.origin / BUCKET / "tables" / "clips.lance")).count_rows() == ROWS
    assert t.count_rows() == ROWS
    assert t.version == version
    # Whole expressions still work, through the client too.
    assert t.count_rows("clip < 10") == ROWS // 2
    got = t.search().where("clip == 3 AND id < 100").select({"id2": "id * 2"}).to_arrow()
    assert sorted(got["id2"].to_pylist()) == [6, 46, 86, 126, 166]


def test_answers_are_bounded_in_rows_bytes_and_sql_memory(node):
    rss = node.rss_kib()
    started = time.time()
    status, answer = post(node, "/v1/sql", {"sql": "SELECT value AS v FROM generate_series(1, 20000000)"})
    assert status == 400 and "limits.max_result_rows" in answer["message"], answer
    assert time.time() - started < 10
    assert node.rss_kib() - rss < 100 * 1024, "the refused answer was built in memory"
    status, answer = post(node, "/v1/sql", {"sql": "SELECT repeat('x', 1000) AS s FROM generate_series(1, 4500)"})
    assert status == 400 and "limits.max_result_bytes" in answer["message"], answer
    status, answer = post(node, "/v1/sql", {"sql": "SELECT count(*) AS n FROM generate_series(1, 5000000) a JOIN generate_series(1, 5000000) b ON a.value = b.value"})
    assert status == 400 and "limits.sql_memory" in answer["message"], answer
    status, rows = post(node, "/v1/sql", {"sql": f"SELECT count(*) AS n FROM generate_series(1, {MAX_ROWS})"})
    assert (status, rows) == (200, [{"n": MAX_ROWS}])
    assert_alive_and_correct(node)

    # Plain scans: an explicit k is bounded like the vector path's; "no limit" (the client
    # sends k = i64::MAX) works for tables within the limit and is refused past it.
    status, answer = post(node, "/v1/table/clips/query/", {"vector": [], "k": 10**9})
    assert status == 400 and "limits.max_result_rows" in answer["message"], answer
    db = connect(node)
    assert db.open_table("clips").search().limit(None).to_arrow().num_rows == ROWS
    wide = db.open_table("wide")
    with pytest.raises(Exception, match="limits.max_result_rows"):
        wide.search().limit(None).to_arrow()
    assert wide.search().limit(MAX_ROWS).to_arrow().num_rows == MAX_ROWS
    assert wide.search().where("id >= 10").limit(None).to_arrow().num_rows == MAX_ROWS - 9


def test_errors_are_400_without_internal_paths(node):
    t = connect(node).open_table("clips")
    with pytest.raises(Exception) as e:
        t.search("frame", query_type="fts", fts_columns="nope").limit(5).to_arrow()
    # A 400 is not retried; a 500 would be (the client then says only "Hit retry limit").
    assert not isinstance(e.value, lancedb.remote.errors.RetryError), e.value
    assert "nope" in str(e.value) and not any(p in str(e.value) for p in INTERNAL), e.value
    cases = [
        ("/v1/table/clips/query/", {"vector": [], "k": 5, "full_text_query": {"columns": ["nope"], "query": "frame"}}),
        ("/v1/table/clips/query/", {"vector": [], "k": 5, "full_text_query": {"query": {"match": {"column": "nope", "terms": "frame"}}}}),
        ("/v1/table/clips/query/", {"vector": [], "k": 5, "filter": "nope = 1"}),
        ("/v1/table/clips/query/", {"vector": [], "k": 5, "filter": "id >>> 2"}),
        ("/v1/table/clips/query/", {"vector": [], "k": 5, "columns": ["nope"]}),
        ("/v1/table/clips/query/", {"vector": [], "k": 5, "order_by": [{"column_name": "nope"}]}),
        ("/v1/table/clips/count_rows/", {"predicate": "text + 1 > 'a'"}),
        ("/v1/table/clips/delete/", {"predicate": "nope = 1"}),
        ("/v1/sql", {"sql": "SELECT nope FROM clips"}),
        ("/v1/table/clips/create_index/", {"column": "nope", "index_type": "BTREE"}),
    ]
    for path, body in cases:
        status, answer = post(node, path, body)
        assert status == 400, (path, body, status, answer)
        assert answer["message"], answer
        assert not any(p in answer["message"] for p in INTERNAL), answer
    assert_alive_and_correct(node)
