"""SQL over Arrow Flight SQL: the lancedb client's execute_query (sync and async) and ADBC's
Flight SQL driver against the search node's Flight listener, answers checked against the
same query computed with pyarrow from the rows written."""

import asyncio

import adbc_driver_flightsql.dbapi as flightsql
import lancedb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import SEARCH_KEY

N = 300


@pytest.fixture(scope="module")
def tables(search):
    db = lancedb.connect("db://lakecache", api_key=SEARCH_KEY, host_override=search.url)
    clips = pa.table({"id": pa.array(range(N), pa.int64()),
                      "cat": pa.array([["a", "b", "c"][i % 3] for i in range(N)]),
                      "score": pa.array([float(i % 17) for i in range(N)])})
    labels = pa.table({"cat": ["a", "b", "c"], "label": ["animals", "buildings", "coast"]})
    db.create_table("fl_clips", clips, mode="overwrite")
    db.create_table("fl_labels", labels, mode="overwrite")
    return clips, labels


def expected_counts(clips):
    g = clips.group_by("cat").aggregate([("id", "count"), ("score", "sum")]).sort_by("cat")
    return {"cat": g["cat"].to_pylist(), "n": g["id_count"].to_pylist(), "total": g["score_sum"].to_pylist()}


GROUP = "SELECT cat, count(*) AS n, sum(score) AS total FROM fl_clips GROUP BY cat ORDER BY cat"
JOIN = ("SELECT l.label, count(*) AS n FROM fl_clips c JOIN fl_labels l ON c.cat = l.cat "
        "WHERE c.id < 30 GROUP BY l.label ORDER BY l.label")


def test_lancedb_execute_query(search, tables):
    clips, _ = tables
    db = lancedb.connect("db://lakecache", api_key=SEARCH_KEY, host_override=search.url)
    got = db.execute_query(GROUP).read_all()
    assert got.to_pydict() == expected_counts(clips)
    got = db.execute_query(JOIN).read_all()
    assert got.to_pydict() == {"label": ["animals", "buildings", "coast"], "n": [10, 10, 10]}
    with pytest.raises(Exception, match="nope"):
        db.execute_query("SELECT nope FROM fl_clips").read_all()
    with pytest.raises(Exception, match="read-only"):
        db.execute_query("DELETE FROM fl_clips WHERE id < 3").read_all()
    assert db.open_table("fl_clips").count_rows() == N
    bad = lancedb.connect("db://lakecache", api_key="wrong", host_override=search.url)
    with pytest.raises(Exception, match="(?i)api key"):
        bad.execute_query(GROUP).read_all()


def test_lancedb_async_execute_query(search, tables):
    clips, _ = tables

    async def run():
        db = await lancedb.connect_async("db://lakecache", api_key=SEARCH_KEY, host_override=search.url)
        reader = await db.execute_query(GROUP)
        return pa.Table.from_batches(await reader.read_all())  # a list of batches
    assert asyncio.run(run()).to_pydict() == expected_counts(clips)


def adbc(search, key=SEARCH_KEY):
    return flightsql.connect(f"grpc://127.0.0.1:{search.flight_port}",
                             db_kwargs={"adbc.flight.sql.rpc.call_header.x-api-key": key})


def test_adbc_flight_sql_driver(search, tables):
    clips, _ = tables
    with adbc(search) as conn, conn.cursor() as cur:
        cur.execute(GROUP)
        assert cur.fetch_arrow_table().to_pydict() == expected_counts(clips)
        cur.execute(JOIN)
        assert cur.fetch_arrow_table().to_pydict() == {"label": ["animals", "buildings", "coast"], "n": [10, 10, 10]}
        cur.execute("SELECT id FROM fl_clips WHERE score = 16 ORDER BY id")
        want = pc.filter(clips["id"], pc.equal(clips["score"], 16.0)).to_pylist()
        assert cur.fetch_arrow_table()["id"].to_pylist() == want
        with pytest.raises(Exception, match="no_such_table"):
            cur.execute("SELECT * FROM no_such_table")
        with pytest.raises(Exception, match="(?i)sql"):
            cur.execute("SELEC oops")
        with pytest.raises(Exception, match="read-only"):
            cur.execute("DROP TABLE fl_clips")
    with pytest.raises(Exception, match="(?i)api key"):
        with adbc(search, key="wrong") as conn, conn.cursor() as cur:
            cur.execute(GROUP)
            cur.fetch_arrow_table()
