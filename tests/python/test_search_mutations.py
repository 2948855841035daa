"""The lancedb client's calls that keep a table current — update, merge_insert, schema
evolution, versions and tags, stats, plans, index details — against the search node (reading
and writing through two cache nodes), each compared with the same call on a local lancedb
table holding the same data."""

import asyncio
import threading
import urllib.error
import urllib.request

import lance
import lancedb
import pyarrow.compute as pc
import numpy as np
import pyarrow as pa
import pytest

from conftest import BUCKET, SEARCH_KEY, SearchNode

DIM = 8


def data(n, start=0, seed=0):
    rng = np.random.default_rng(seed + start)
    return pa.table({
        "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
        "x": pa.array(np.arange(start, start + n, dtype=np.int32) % 7),
        "name": pa.array([f"row {i}" for i in range(start, start + n)]),
        "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(rng.standard_normal(n * DIM).astype(np.float32)), DIM),
    })


def remote(search, key=SEARCH_KEY):
    return lancedb.connect("db://lakecache", api_key=key, host_override=search.url)


@pytest.fixture
def pair(search, tmp_path, request):
    """The same table, remote and local, named after the test."""
    name = request.node.name.replace("test_", "")[:40]
    local = lancedb.connect(str(tmp_path / "local")).create_table(name, data(100))
    table = remote(search).create_table(name, data(100))
    return table, local


def rows(t):
    """Every row, by id (a remote table has no to_arrow(): a plain query reads it)."""
    return t.search().limit(1_000_000).to_arrow().sort_by("id").to_pylist()


def test_update_values_sql_and_predicates_match_a_local_table(pair):
    table, local = pair
    for t in (table, local):
        t.update(where="id < 10", values={"x": 100})
        t.update(values_sql={"name": "concat(name, ' seen')"}, where="x = 100")
    r = table.update(values={"x": 5})  # no predicate: every row
    l = local.update(values={"x": 5})
    assert r.rows_updated == l.rows_updated == 100
    assert r.version == table.version
    assert rows(table) == rows(local)
    assert rows(table)[3]["name"] == "row 3 seen"
    # Bad input: the client's error names the cause, and nothing changed.
    v = table.version
    with pytest.raises(Exception, match="nope"):
        table.update(values={"nope": 1})
    with pytest.raises(Exception, match="predicate"):
        table.update(where="id < 3) OR (true", values={"x": 0})
    assert table.version == v and rows(table) == rows(local)


def test_merge_insert_variants_match_a_local_table(pair):
    table, local = pair
    src = data(30, start=90, seed=1)  # 10 matches (90..99), 20 new
    res = []
    for t in (table, local):
        res.append(t.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(src))
    assert rows(table) == rows(local) and table.count_rows() == 120
    r, l = res
    assert (r.num_updated_rows, r.num_inserted_rows, r.num_deleted_rows) == (l.num_updated_rows, l.num_inserted_rows, l.num_deleted_rows) == (10, 20, 0)
    assert r.version == table.version

    # Find-or-create: only new keys go in.
    src2 = data(10, start=115, seed=2)
    for t in (table, local):
        t.merge_insert("id").when_not_matched_insert_all().execute(src2)
    # A conditional update, then replacing a region of the table.
    src3 = data(20, start=0, seed=3)
    for t in (table, local):
        t.merge_insert("id").when_matched_update_all(where="target.x < 3").execute(src3)
        t.merge_insert("id").when_matched_update_all().when_not_matched_insert_all() \
            .when_not_matched_by_source_delete("id >= 100").execute(data(5, start=100, seed=4))
    assert rows(table) == rows(local)
    # Two key columns.
    for t in (table, local):
        t.merge_insert(["id", "x"]).when_matched_update_all().execute(data(50, start=0, seed=5))
    assert rows(table) == rows(local)
    # Everything not in the source goes.
    for t in (table, local):
        out = t.merge_insert("id").when_matched_update_all().when_not_matched_by_source_delete().execute(data(7, seed=6))
    assert rows(table) == rows(local) and table.count_rows() == 7

    with pytest.raises(Exception, match="nope"):
        table.merge_insert("nope").when_matched_update_all().execute(data(3))


def test_concurrent_merge_inserts_from_two_search_nodes_lose_no_rows(search, tmp_path):
    """Two clients, each through its own search node, upsert overlapping and disjoint keys
    at once: lance's commit-conflict retry keeps every row, once."""
    other = SearchNode(tmp_path, search.fleet.nodes)
    try:
        remote(search).create_table("upserts", data(50))
        clients = [remote(search).open_table("upserts"), remote(other).open_table("upserts")]
        rounds = 6
        errors = []

        def work(c, k):
            try:
                for r in range(rounds):
                    # Own new keys (disjoint between the clients) plus 0..9, which both update.
                    new = data(5, start=1000 + 100 * k + 5 * r, seed=r)
                    shared = data(10, start=0, seed=10 * k + r)
                    src = pa.concat_tables([shared, new])
                    c.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(src)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(c, k)) for k, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in threads), "merge_insert hung"
        assert not errors, errors
        # Read from the origin: a search node holds a table for up to its consistency interval.
        path = search.fleet.origin / BUCKET / "tables" / "upserts.lance"
        ids = lance.dataset(str(path)).to_table(columns=["id"])["id"].to_pylist()
        assert len(ids) == len(set(ids)), "duplicated rows"
        assert sorted(ids) == sorted(list(range(50)) + [1000 + 100 * k + i for k in range(2) for i in range(5 * rounds)])
    finally:
        other.stop()


def test_schema_evolution_matches_a_local_table(pair):
    table, local = pair
    for t in (table, local):
        t.add_columns({"double_x": "x * 2", "tag": "'t'"})
        t.add_columns(pa.field("empty", pa.int32()))
        t.alter_columns({"path": "name", "rename": "title"}, {"path": "x", "nullable": True})
        t.alter_columns({"path": "double_x", "data_type": pa.int64()})
        t.drop_columns(["tag"])
    assert table.schema == local.schema
    assert rows(table) == rows(local)
    assert table.schema.field("double_x").type == pa.int64()
    assert rows(table)[4]["empty"] is None
    # The table still takes rows of its new shape.
    new = local.to_arrow().slice(0, 3)
    new = new.set_column(new.schema.get_field_index("id"), "id", pc.add(new["id"], 1000))
    table.add(new)
    assert table.count_rows() == 103
    with pytest.raises(Exception, match="nope"):
        table.drop_columns(["nope"])
    with pytest.raises(Exception, match="nope"):
        table.alter_columns({"path": "nope", "rename": "x2"})
    with pytest.raises(Exception):
        table.add_columns({"bad": "no_such_column + 1"})


def test_versions_restore_and_tags(pair):
    table, local = pair
    for t in (table, local):
        t.add(data(10, start=100))  # v2
        t.delete("id < 50")         # v3
    assert [v["version"] for v in table.list_versions()] == [v["version"] for v in local.list_versions()] == [1, 2, 3]

    table.tags.create("first", 1)
    table.tags.create("grown", 2)
    tags = table.tags.list()
    assert {k: v["version"] for k, v in tags.items()} == {"first": 1, "grown": 2}
    assert tags["first"]["manifest_size"] > 0
    table.tags.update("grown", 3)
    assert table.tags.get_version("grown") == 3
    table.tags.delete("grown")
    assert set(table.tags.list()) == {"first"}
    with pytest.raises(Exception, match="first"):
        table.tags.create("first", 2)
    with pytest.raises(Exception, match="missing"):
        table.tags.get_version("missing")

    # Checkout by tag and by number, then restore.
    table.checkout("first")
    assert table.version == 1 and table.count_rows() == 100
    table.checkout_latest()
    for t in (table, local):
        t.restore(2)
    assert table.version == local.version == 4
    assert rows(table) == rows(local) and table.count_rows() == 110


def test_rename_is_refused_with_the_reason(search, pair):
    db = remote(search)
    with pytest.raises(Exception) as e:
        db.rename_table("rename_is_refused_with_the_reason", "renamed")
    assert "not supported" in str(e.value) and "was not found" not in str(e.value)
    assert "rename_is_refused_with_the_reason" in db.table_names()


def test_stats_and_plans(search, pair):
    table, local = pair
    for t in (table, local):
        t.add(data(5, start=100))
        t.add(data(300, start=200))
    s, l = table.stats(), local.stats()
    assert s["num_rows"] == l["num_rows"] == 405
    assert s["fragment_stats"] == l["fragment_stats"]
    assert s["num_indices"] == l["num_indices"] == 0
    # Every byte of the table's data files on the origin.
    data_dir = search.fleet.origin / BUCKET / "tables" / "stats_and_plans.lance" / "data"
    assert s["total_bytes"] == sum(p.stat().st_size for p in data_dir.iterdir()) > 0

    plan = table.search(np.zeros(DIM, dtype=np.float32)).limit(5).analyze_plan()
    assert "metrics=" in plan and "output_rows" in plan
    plan = table.search().where("x = 3").analyze_plan()
    assert "output_rows" in plan


def test_list_indices_carries_what_the_client_reads(search, pair):
    table, local = pair
    for t in (table, local):
        t.create_scalar_index("id")
        t.create_fts_index("name")
        t.add(data(10, start=100))
    got = {i.name: i for i in table.list_indices()}
    want = {i.name: i for i in local.list_indices()}
    assert set(got) == set(want) == {"id_idx", "name_idx"}
    for name in got:
        g, w = got[name], want[name]
        for field in ("index_type", "columns", "type_url", "index_version", "size_bytes", "num_segments"):
            assert getattr(g, field) == getattr(w, field), field
        # The tokenizer settings the client sent. (The whole map differs by lance version: the
        # lance inside lancedb 0.40 adds lance_tokenizer, lance 14 document_granularity.)
        for k in ("base_tokenizer", "language", "with_position", "lower_case", "stem", "remove_stop_words",
                  "ascii_folding", "max_token_length"):
            assert g.index_details.get(k) == w.index_details.get(k), k
        assert g.index_uuid and g.created_at is not None and g.size_bytes > 0
        assert g.num_indexed_rows == w.num_indexed_rows == 100
        assert g.num_unindexed_rows == w.num_unindexed_rows == 10
    # The FTS index's tokenizer settings reach the client.
    assert got["name_idx"].index_details["base_tokenizer"] == "simple"
    assert table.search("row", query_type="fts").limit(5).to_arrow().num_rows == 5
    stats = table.index_stats("id_idx")
    assert stats.num_unindexed_rows == 10


def test_ivf_rq_index_and_binary_vectors(search, tmp_path):
    db, ldb = remote(search), lancedb.connect(str(tmp_path / "local"))
    t = db.create_table("rq", data(600, seed=9))
    t.create_index(vector_column_name="vector", index_type="IVF_RQ", num_partitions=2, num_bits=1)
    assert [i.index_type for i in t.list_indices()] == ["IvfRq"]
    q = data(1, seed=77)["vector"][0].values.to_numpy()
    got = t.search(q).limit(10).nprobes(2).to_arrow()
    assert got.num_rows == 10

    rng = np.random.default_rng(5)
    bits = rng.integers(0, 256, (200, 4), dtype=np.uint8)
    binary = pa.table({"id": pa.array(np.arange(200)),
                       "bv": pa.FixedSizeListArray.from_arrays(pa.array(bits.reshape(-1), pa.uint8()), 4)})
    rb, lb = db.create_table("binary", binary), ldb.create_table("binary", binary)
    q = np.array([3, 200, 17, 255], dtype=np.uint8)
    r = rb.search(q, vector_column_name="bv").distance_type("hamming").limit(10).to_arrow()
    l = lb.search(q, vector_column_name="bv").distance_type("hamming").limit(10).to_arrow()
    assert r["_distance"].to_pylist() == l["_distance"].to_pylist()
    assert set(r["id"].to_pylist()) <= set(range(200)) and r.num_rows == 10


def test_routes_this_server_lacks_answer_501_not_table_not_found(search, pair):
    req = urllib.request.Request(f"{search.url}/v1/table/routes_this_server_lacks_answer_501_not_table_n/optimize/",
                                 data=b"{}", method="POST", headers={"x-api-key": SEARCH_KEY})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 501
    assert b"not implemented" in e.value.read()


def test_async_client(search, tmp_path):
    async def run():
        db = await lancedb.connect_async("db://lakecache", api_key=SEARCH_KEY, host_override=search.url)
        ldb = await lancedb.connect_async(str(tmp_path / "local"))
        r = await db.create_table("async_calls", data(40))
        l = await ldb.create_table("async_calls", data(40))
        for t in (r, l):
            await t.update({"x": 9}, where="id < 4")
            await t.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data(10, start=35))
            await t.add_columns({"y": "x + 1"})
            await t.drop_columns(["name"])
        assert (await r.schema()) == (await l.schema())
        got = (await r.query().to_arrow()).sort_by("id").to_pylist()
        want = (await l.query().to_arrow()).sort_by("id").to_pylist()
        assert got == want and len(got) == 45
        await r.tags.create("v2", 2)
        assert (await r.tags.get_version("v2")) == 2
        stats = await r.stats()
        assert stats["num_rows"] == 45
        assert [v["version"] for v in await r.list_versions()] == [v["version"] for v in await l.list_versions()]
        for t in (r, l):
            await t.alter_columns({"path": "y", "rename": "z"})
            await t.create_index("id", config=lancedb.index.BTree())
        assert (await r.schema()) == (await l.schema())
        await r.tags.update("v2", 3)
        assert (await r.tags.list())["v2"]["version"] == 3
        await r.checkout("v2")
        assert await r.version() == 3
        await r.checkout_latest()
        await r.tags.delete("v2")
        assert await r.tags.list() == {}
        got, want = await r.list_indices(), await l.list_indices()
        assert [(i.name, i.index_type, i.columns) for i in got] == [(i.name, i.index_type, i.columns) for i in want]
        assert got[0].index_uuid and got[0].num_unindexed_rows == 0
        plan = await r.query().where("id < 3").analyze_plan()
        assert "output_rows" in plan
        for t in (r, l):
            await t.restore(2)
        got = (await r.query().to_arrow()).sort_by("id").to_pylist()
        want = (await l.query().to_arrow()).sort_by("id").to_pylist()
        assert got == want and await r.count_rows() == 40
    asyncio.run(run())


def test_read_consistency_interval_sees_writes_made_elsewhere(search):
    """A client with read_consistency_interval=0 sends x-lancedb-min-timestamp = now: a write
    made straight to the origin (pylance) is visible to its very next read, although the
    search node itself would keep the table for up to its own interval (1 s here)."""
    from datetime import timedelta
    strong = lancedb.connect("db://lakecache", api_key=SEARCH_KEY, host_override=search.url,
                             read_consistency_interval=timedelta(0))
    t = strong.create_table("fresh_reads", data(10))
    path = search.fleet.origin / BUCKET / "tables" / "fresh_reads.lance"
    for i in range(3):
        assert t.count_rows() == 10 + 5 * i  # the node now holds this version, just checked
        lance.write_dataset(data(5, start=100 + 5 * i), str(path), mode="append")
        assert t.count_rows() == 15 + 5 * i
