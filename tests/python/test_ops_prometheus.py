"""The operator's view end to end: a real fleet (two cache nodes, the router, a search node)
scraped by a real Prometheus (Debian's `prometheus`, with ops/prometheus/prometheus-local.yml
pointed at the test's ports and ops/prometheus/alerts.yml loaded), a bounded load of S3
reads, writes and searches, then every PromQL expression of every Grafana panel and template
variable and of every alert rule run against that Prometheus: each must be valid and return
data."""

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import lancedb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from botocore.config import Config

from conftest import ACCESS_KEY, BUCKET, SEARCH_KEY, SECRET_KEY, Fleet, SearchNode, _free_port, _wait_healthy

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"
DASHBOARDS = sorted((OPS / "grafana/dashboards").glob("*.json"))
RULES = OPS / "prometheus/alerts.yml"
SCRAPE = 1  # seconds
DIM = 8
NAME = re.compile(r"\b(?:cachenode|router|searchnode)_[a-z0-9_]+\b")


def prom_query(url: str, expr: str) -> dict:
    q = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}") or {"status": "error", "error": str(e)}


def prom_get(url: str, path: str) -> dict:
    with urllib.request.urlopen(f"{url}{path}", timeout=10) as r:
        return json.loads(r.read())


def http_json(url: str, body, method="POST", accept="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "x-api-key": SEARCH_KEY, "content-type": "application/json", "accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def prometheus_config(tmp: Path, fleet: Fleet, search: SearchNode) -> Path:
    """ops/prometheus/prometheus-local.yml with the test's ports: same jobs, same labels
    (cache nodes get `node` = their id in the router's config), the alert rules loaded."""
    cfg = yaml.safe_load((OPS / "prometheus/prometheus-local.yml").read_text())
    cfg["global"].update(scrape_interval=f"{SCRAPE}s", evaluation_interval=f"{SCRAPE}s", scrape_timeout=f"{SCRAPE}s")
    cfg["rule_files"] = [str(RULES)]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"lakecache-router", "lakecache-cache-node", "lakecache-search-node"}, jobs.keys()
    jobs["lakecache-router"]["static_configs"] = [{"targets": [f"127.0.0.1:{fleet.port}"]}]
    jobs["lakecache-cache-node"]["static_configs"] = [
        {"targets": [f"127.0.0.1:{n.port}"], "labels": {"node": f"cache-{i}"}} for i, n in enumerate(fleet.nodes)]
    jobs["lakecache-search-node"]["static_configs"] = [{"targets": [f"127.0.0.1:{search.port}"]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """The fleet under a bounded load, scraped by Prometheus; yields Prometheus's URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/setup.sh (Debian package `prometheus`)")
    base = tmp_path_factory.mktemp("observed")
    # 1 MiB of memory per node: a second read of a 3 MiB object comes from the page store.
    fleet = Fleet(base, memory="1 MiB")
    search = SearchNode(base, fleet.nodes)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(base / "prometheus.log", "wb")
    prom = subprocess.Popen([binary, f"--config.file={prometheus_config(base, fleet, search)}",
                             f"--storage.tsdb.path={base / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, prom, base / "prometheus.log", path="/-/ready", timeout=60)
        # Load only once every target has been scraped (Prometheus applies its targets a few
        # seconds after start), so rates see the counters before and after it.
        deadline = time.time() + 60
        while True:
            targets = prom_get(url, "/api/v1/targets")["data"]["activeTargets"]
            if len(targets) == 4 and all(t["health"] == "up" for t in targets):
                break
            assert time.time() < deadline, f"targets not scraped: {targets}"
            time.sleep(0.5)
        time.sleep(2 * SCRAPE)
        drive_load(fleet, search)
        # Two more scrapes after the load, so every rate window holds it.
        time.sleep(3 * SCRAPE + 1)
        yield url
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
        log.close()
        search.stop()
        fleet.stop()


def drive_load(fleet: Fleet, search: SearchNode):
    """Bounded: a few dozen S3 calls through the router and a few dozen searches."""
    s3 = boto3.client("s3", endpoint_url=fleet.url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                      region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    rng = np.random.default_rng(5)
    blobs = {f"media/clip-{i}.lance": rng.bytes(3 << 20) for i in range(4)}
    for k, v in blobs.items():
        (fleet.origin / BUCKET / k).parent.mkdir(parents=True, exist_ok=True)
        (fleet.origin / BUCKET / k).write_bytes(v)
    s3.put_object(Bucket=BUCKET, Key="uploads/written.bin", Body=rng.bytes(200_000))
    for rnd in range(3):
        for k, v in blobs.items():
            assert s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() == v
            got = s3.get_object(Bucket=BUCKET, Key=k, Range="bytes=1000-70999")["Body"].read()
            assert got == v[1000:71000]
        time.sleep(0.5)  # page-store writes land between rounds
    s3.head_object(Bucket=BUCKET, Key="uploads/written.bin")
    s3.list_objects_v2(Bucket=BUCKET, Prefix="media/")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key="media/missing.bin")

    db = lancedb.connect("db://lakecache", api_key=SEARCH_KEY, host_override=search.url)
    n = 500
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    words = ["harbor", "sunset", "river", "city"]
    t = db.create_table("clips", pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM),
        "text": pa.array([f"{words[i % 4]} frame {i}" for i in range(n)]),
    }))
    t.create_fts_index("text")
    base = f"{search.url}/v1/table/clips/query/"
    bodies = [
        {"vector": vecs[3].tolist(), "k": 5, "columns": ["id"]},
        {"vector": vecs[7].tolist(), "k": 5, "filter": "id < 300", "prefilter": True, "columns": ["id"]},
        {"full_text_query": {"columns": ["text"], "query": "harbor"}, "k": 5, "columns": ["id"]},
        {"vector": vecs[9].tolist(), "full_text_query": {"columns": ["text"], "query": "river"}, "k": 5,
         "columns": ["id"]},
        {"filter": "id >= 490", "k": 20, "columns": ["id"]},
    ]
    for _ in range(4):
        for b in bodies:
            status, out = http_json(base, b)
            assert status == 200, out
    assert http_json(base, {"vector": [0.0] * (DIM + 1), "k": 5})[0] == 400
    status, out = http_json(f"{search.url}/v1/sql", {"sql": "SELECT count(*) AS n FROM clips WHERE id < 100"})
    assert status == 200, out
    status, out = http_json(f"{search.url}/v1/table/clips/count_rows/", {"predicate": "id < 10"})
    assert (status, json.loads(out)) == (200, 10)


def dashboard_exprs(d: dict) -> tuple[list[tuple[str, str]], list[dict]]:
    """(panel title, expr) of every target, nested rows included; and the variables."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(d.get("panels", []))
    return out, d.get("templating", {}).get("list", [])


def variable_query(v: dict) -> str | None:
    """A query variable's `label_values(selector, label)` as PromQL that lists the values."""
    if v.get("type") != "query":
        return None
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    m = re.fullmatch(r"\s*label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", q or "")
    assert m, f"variable {v.get('name')}: unsupported query {q!r}"
    return f"group by ({m.group(2)}) ({m.group(1)})", m.group(2)


def regex_literal(v: str) -> str:
    """`v` as a regex matching itself, inside a PromQL double-quoted string (as Grafana
    writes a chosen value): metacharacters get a backslash, which the string needs doubled."""
    return re.sub(r"([.+*?()\[\]{}|^$\\])", r"\\\\\1", v)


def substitute(expr: str, values: dict) -> str:
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", f"{SCRAPE}s").replace("$__range", "5m")
    for name in sorted(values, key=len, reverse=True):
        v = regex_literal(values[name])
        expr = expr.replace(f"${{{name}}}", v).replace(f"[[{name}]]", v).replace(f"${name}", v)
    return expr


def test_every_target_is_scraped(observed):
    targets = prom_get(observed, "/api/v1/targets")["data"]["activeTargets"]
    assert {t["labels"]["job"] for t in targets} == {
        "lakecache-router", "lakecache-cache-node", "lakecache-search-node"}
    bad = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets if t["health"] != "up"]
    assert not bad, bad
    nodes = prom_query(observed, 'group by (node) (up{job="lakecache-cache-node"})')["data"]["result"]
    assert sorted(r["metric"]["node"] for r in nodes) == ["cache-0", "cache-1"]


def test_every_dashboard_query_returns_data(observed):
    assert {p.name for p in DASHBOARDS} >= {"fleet.json", "cache-node.json", "router.json", "search.json"}
    failures = []
    checked = 0
    for path in DASHBOARDS:
        exprs, variables = dashboard_exprs(json.loads(path.read_text()))
        assert exprs, f"{path.name} has no queries"
        values = {}
        for v in variables:
            vq = variable_query(v)
            if vq is None:
                continue
            q, label = vq
            r = prom_query(observed, q)
            got = [x["metric"].get(label) for x in r.get("data", {}).get("result", [])]
            checked += 1
            if r.get("status") != "success" or not got:
                failures.append(f"{path.name} variable ${v['name']}: {q} -> {r.get('error') or 'no values'}")
                continue
            values[v["name"]] = sorted(got)[0]
        for title, expr in exprs:
            q = substitute(expr, values)
            assert "$" not in q.replace("$__", ""), f"{path.name} / {title}: unresolved variable in {q}"
            r = prom_query(observed, q)
            checked += 1
            if r.get("status") != "success":
                failures.append(f"{path.name} / {title}: invalid: {r.get('error')}\n    {q}")
            elif not r["data"]["result"]:
                failures.append(f"{path.name} / {title}: no data\n    {q}")
    assert checked > 50
    assert not failures, f"{len(failures)} of {checked} dashboard queries failed:\n" + "\n".join(failures)


def test_every_alert_rule_is_valid_and_reads_live_series(observed):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 6
    failures = []
    for rule in rules:
        expr = rule["expr"]
        r = prom_query(observed, expr)
        if r.get("status") != "success":
            failures.append(f"{rule.get('alert', rule.get('record'))}: invalid: {r.get('error')}")
            continue
        # A healthy fleet fires nothing, so the rule's own answer is empty; each series it
        # reads must exist, though, or the alert could never fire.
        for sel in set(re.findall(r"\b((?:cachenode|router|searchnode)_[a-z0-9_]+|up)\b(\{[^}]*\})?", expr)):
            q = f"count({sel[0]}{sel[1]})"
            r = prom_query(observed, q)
            if r.get("status") != "success" or not r["data"]["result"]:
                failures.append(f"{rule['alert']}: {sel[0]}{sel[1]} has no series")
    # Prometheus itself evaluated the loaded rules without error.
    loaded = prom_get(observed, "/api/v1/rules")["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError")) for g in loaded for r in g["rules"]}
    assert set(health) == {r["alert"] for r in rules}
    failures += [f"{name}: {h}" for name, h in health.items() if h[0] == "err"]
    assert not failures, "\n".join(failures)


def test_the_load_shows_in_the_figures_operators_read(observed):
    """A few figures from ops/METRICS.md, with what the load must have produced."""
    def value(expr):
        r = prom_query(observed, expr)
        assert r["status"] == "success", r
        res = r["data"]["result"]
        assert res, f"no data: {expr}"
        return float(res[0]["value"][1])

    assert value('sum(cachenode_cache_hits_total{tier="disk"})') > 0
    assert value('sum(cachenode_cache_hits_total{tier="memory"})') > 0
    assert value("sum(cachenode_pagestore_read_duration_microseconds_count)") > 0
    assert value('sum(cachenode_origin_requests_total{op="get"})') > 0
    assert value('sum(router_s3_requests_total{method="GET",status="404"})') >= 1
    assert value('sum(searchnode_query_requests_total{table="clips",kind="hybrid",outcome="ok"})') >= 4
    assert value('sum(searchnode_query_requests_total{table="clips",kind="vector",outcome="error"})') >= 1
    assert value('searchnode_catalog_table_version{table="clips"}') >= 1
    assert value('sum(searchnode_objectstore_requests_total{op="get"})') > 0
    # Every name any process emits is documented, under its component's prefix.
    doc = (OPS / "METRICS.md").read_text()
    names = prom_get(observed, "/api/v1/label/__name__/values")["data"]
    ours = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names if NAME.fullmatch(n)}
    assert len(ours) > 40
    missing = sorted(n for n in ours if f"`{n}`" not in doc)
    assert not missing, f"emitted but not in ops/METRICS.md: {missing}"


def test_dashboards_are_generated_and_checked():
    """The JSON dashboards are what ops/grafana/build_dashboards.py writes, and pass the
    static check (names in METRICS.md, labels, units, variables, promtool parses every query)."""
    r = subprocess.run(["python3", str(OPS / "grafana/check_dashboards.py")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
