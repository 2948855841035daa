"""ops/prometheus/: promtool accepts both scrape configs and the alert rules, and the rules'
unit tests pass (ops/prometheus/check.sh); every metric an alert reads is in ops/METRICS.md;
every alert has a test where it fires and one where it does not; and the scrape configs give
cache nodes the `node` label the router uses for them (locally from config/router.toml, on
Kubernetes by relabelling the manifests' pods the way Prometheus would)."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "ops" / "prometheus"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# What may appear in an expression besides metric names (functions are recognised by the
# parenthesis that follows them).
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan"}


def alert_rules():
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def documented_metrics():
    """{name: type} from the tables of ops/METRICS.md (rows like | `name` | type | ...)."""
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (counter|gauge|histogram) \|", (ROOT / "ops" / "METRICS.md").read_text(), re.M)
    assert rows, "no metric tables found in ops/METRICS.md"
    return dict(rows)


def is_documented(name, documented):
    if name in documented:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and documented.get(name.removesuffix(suffix)) == "histogram":
            return True
    return False


def metric_names(expr):
    """Metric names an expression selects: identifiers left once strings, matchers, ranges,
    grouping clauses, durations and function calls are set aside."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+[0-9a-z]+", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        if word.lower() in PROMQL_WORDS or re.match(r"\s*\(", e[m.end():]):
            continue
        names.add(word)
    return names


def test_promtool_checks_pass():
    assert shutil.which("promtool"), "promtool is not installed: run scripts/setup.sh (Debian package prometheus)"
    r = subprocess.run(["bash", str(PROM / "check.sh")], capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, f"ops/prometheus/check.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"


def test_alerts_read_only_documented_metrics():
    documented = documented_metrics()
    alerts = alert_rules()
    assert alerts, "alerts.yml has no alerts"
    for rule in alerts:
        expr = rule["expr"]
        # The naming rule's prefixes, whatever surrounds them...
        for name in re.findall(r"\b(?:cachenode|router|searchnode)_[a-z0-9_]+", expr):
            assert is_documented(name, documented), f"{rule['alert']}: {name} is not in ops/METRICS.md"
        # ...and any other series selected at all: only `up` besides the documented ones.
        for name in metric_names(expr):
            assert name == "up" or is_documented(name, documented), \
                f"{rule['alert']}: selects {name}, which is neither `up` nor in ops/METRICS.md"


def test_metric_name_extraction_sees_selectors():
    assert metric_names('sum by (le, node) (rate(x_bucket{a="b"}[5m] offset 1h)) / on (node) up or vector(0)') \
        == {"x_bucket", "up"}


def test_every_alert_is_tested_firing_and_silent():
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing, silent = set(), set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    for rule in alert_rules():
        name = rule["alert"]
        assert name in firing, f"alerts_test.yml has no case where {name} fires"
        assert name in silent, f"alerts_test.yml has no case where {name} stays silent"
        assert rule.get("for"), f"{name} has no `for:`"
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), f"{name}: severity"
        assert {"summary", "description"} <= set(rule.get("annotations", {})), f"{name}: annotations"


def test_local_scrape_config_matches_the_router_config():
    cfg = yaml.safe_load((PROM / "prometheus-local.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {sc["job_name"]: sc for sc in cfg["scrape_configs"]}
    assert set(jobs) == {"lakecache-router", "lakecache-cache-node", "lakecache-search-node"}
    router = tomllib.loads((ROOT / "config" / "router.toml").read_text())
    targets = {t: sc.get("labels", {}) for sc in jobs["lakecache-cache-node"]["static_configs"] for t in sc["targets"]}
    nodes = {n["url"].removeprefix("http://"): n["id"] for n in router["nodes"]}
    assert {t: labels.get("node") for t, labels in targets.items()} == nodes, \
        "cache-node targets and their `node` labels must be config/router.toml's [[nodes]] url and id"
    (router_target,) = [t for sc in jobs["lakecache-router"]["static_configs"] for t in sc["targets"]]
    assert router_target == router["server"]["listen"]


def relabel(labels, configs):
    """Prometheus relabelling (replace, keep, drop) of one target; None when dropped."""
    labels = dict(labels)
    for c in configs:
        value = c.get("separator", ";").join(labels.get(s, "") for s in c.get("source_labels", []))
        m = re.fullmatch(c.get("regex", "(.*)"), value)
        action = c.get("action", "replace")
        if action == "keep" and not m or action == "drop" and m:
            return None
        if action == "replace" and m:
            out = m.expand(re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", c.get("replacement", "$1")))
            if out:
                labels[c["target_label"]] = out
            else:
                labels.pop(c["target_label"], None)
    return labels


def meta_name(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def test_k8s_relabelling_gives_the_router_node_ids():
    cfg = yaml.safe_load((PROM / "prometheus-k8s.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {sc["job_name"]: sc for sc in cfg["scrape_configs"]}
    workloads = {}
    for f in (ROOT / "ops" / "k8s").glob("*.yaml"):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d["kind"] in ("StatefulSet", "Deployment"):
                workloads[d["metadata"]["name"]] = d
    secret = next(d for d in yaml.safe_load_all((ROOT / "ops" / "k8s" / "config.yaml").read_text()) if d and d["kind"] == "Secret")
    router_ids = {n["id"] for n in tomllib.loads(secret["stringData"]["router.toml"])["nodes"]}

    def targets(job, w, ip):
        """The targets Kubernetes pod discovery gives `job` for the pods of workload w."""
        tpl = w["spec"]["template"]
        (c,) = tpl["spec"]["containers"]
        if w["kind"] == "StatefulSet":
            pods = [f"{w['metadata']['name']}-{i}" for i in range(w["spec"]["replicas"])]
        else:
            pods = [f"{w['metadata']['name']}-5d8f9c7b6-x{i}" for i in range(w["spec"]["replicas"])]
        out = []
        for i, pod in enumerate(pods):
            pod_ip = ip.format(i)
            meta = {"job": job, "__metrics_path__": "/metrics", "__scheme__": "http",
                    "__meta_kubernetes_namespace": w["metadata"]["namespace"],
                    "__meta_kubernetes_pod_name": pod, "__meta_kubernetes_pod_ip": pod_ip,
                    "__meta_kubernetes_pod_phase": "Running"}
            meta |= {f"__meta_kubernetes_pod_label_{meta_name(k)}": v for k, v in tpl["metadata"]["labels"].items()}
            meta |= {f"__meta_kubernetes_pod_annotation_{meta_name(k)}": v
                     for k, v in tpl["metadata"].get("annotations", {}).items()}
            for p in c["ports"]:
                host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
                t = relabel(meta | {"__address__": f"{host}:{p['containerPort']}"}, jobs[job]["relabel_configs"])
                if t is not None:
                    out.append(t)
        return out

    for ip in ("10.4.0.{}", "fd00:10:4::{}"):
        for app in ("cache-node", "router", "search-node"):
            job = f"lakecache-{app}"
            w = workloads[app]
            port = w["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
            got = targets(job, w, ip)
            assert len(got) == w["spec"]["replicas"], f"{job}: one target per pod"
            for i, t in enumerate(got):
                host = ip.format(i)
                host = f"[{host}]" if ":" in host else host
                assert t["__address__"] == t["instance"] == f"{host}:{port}", t
                assert t["__metrics_path__"] == "/metrics"
                assert t["namespace"] == "lakecache" and t["pod"].startswith(app), t
                if app == "cache-node":
                    assert t["node"] == t["pod"], t
                else:
                    assert "node" not in t, f"{job} must not carry `node` (the router's own series have it)"
            if app == "cache-node":
                assert {t["node"] for t in got} == router_ids, \
                    "cache-node pod names must be the router's [[nodes]] ids in ops/k8s/config.yaml"
            # A job scrapes its own component only.
            for other in ("cache-node", "router", "search-node"):
                if other != app:
                    assert targets(job, workloads[other], ip) == [], f"{job} must not scrape {other} pods"
