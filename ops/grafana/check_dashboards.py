#!/usr/bin/env python3
"""Static checks for the lakecache Grafana dashboards and provisioning files.

    python3 ops/grafana/check_dashboards.py          # all checks; exit 1 on any problem
    python3 ops/grafana/check_dashboards.py --list   # also print every expression, variables substituted

What it checks (no Grafana or Prometheus needed; pyyaml for the provisioning files):
- every dashboard is valid JSON with the shared settings (uid, tags, refresh, time, datasource variable);
- panel ids are unique (row panels' nested `panels` included) and panels do not overlap on the grid;
- every non-row panel uses the `${datasource}` variable, has targets, each with an `expr`, and a unit;
- every metric name in an expression or variable query is in ops/METRICS.md (or is `up`), a histogram
  is only used through `_bucket`/`_sum`/`_count`, `rate`/`increase` only see counters, label names in
  selectors and `by (...)` exist on that metric, and a label value matched with `=` is one METRICS.md
  lists (where it lists a closed set);
- every range is `[$__rate_interval]`, every `histogram_quantile` sums by `le`;
- every `$var` is a template variable or a Grafana builtin;
- brackets balance; if `promtool` is on PATH, every expression (variables substituted) parses;
- the checked-in JSON is what build_dashboards.py produces now.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
METRICS_MD = REPO / "ops" / "METRICS.md"
DASH_DIR = HERE / "dashboards"
PROV_DIR = HERE / "provisioning"

DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}
SCRAPE_LABELS = {"job", "instance"}
SUBST = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

NAME_RE = re.compile(r"\b(?:cachenode|router|searchnode)_[a-z0-9_]+")
HIST_SUFFIX_RE = re.compile(r"_(bucket|sum|count)$")
VAR_RE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
SELECTOR_RE = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)\s*\(")
RATE_RE = re.compile(r"\b(rate|irate|increase)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")
RANGE_RE = re.compile(r"\[([^\]]*)\]")


class Metric:
    def __init__(self, name: str, kind: str, labels: dict[str, set[str] | None]):
        self.name, self.kind, self.labels = name, kind, labels


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip().replace("\\|", "|") for c in cells[1:-1]]


def parse_metrics(text: str) -> dict[str, Metric]:
    metrics: dict[str, Metric] = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = split_row(line)
        if len(cells) < 3:
            continue
        m = re.fullmatch(r"`((?:cachenode|router|searchnode)_[a-z0-9_]+)`", cells[0])
        if not m:
            continue
        name, kind, label_cell = m.group(1), cells[1], cells[2]
        labels: dict[str, set[str] | None] = {}
        for lm in re.finditer(r"`(\w+)`(?:\s*=\s*([^`]*?))?(?=,\s*`|\s*\(|$)", label_cell):
            label, values = lm.group(1), lm.group(2)
            if values and "…" not in values and "..." not in values:
                labels[label] = {v.strip() for v in values.split("|") if v.strip()}
            else:
                labels.setdefault(label, None)
        metrics[name] = Metric(name, kind, labels)
    return metrics


def allowed_labels(metric: Metric | None, series: str) -> dict[str, set[str] | None]:
    """Labels a series can carry: its own, the scrape labels, `node` on cache nodes, `le` on buckets."""
    out: dict[str, set[str] | None] = {label: None for label in SCRAPE_LABELS}
    if series == "up":
        out["node"] = None
        return out
    if metric is None:
        return out
    out.update(metric.labels)
    if metric.name.startswith("cachenode_"):
        out.setdefault("node", None)
    if series.endswith("_bucket"):
        out["le"] = None
    return out


def resolve(series: str, metrics: dict[str, Metric]) -> tuple[Metric | None, str | None]:
    """(metric, problem) for a series name as written in an expression."""
    if series in metrics:
        m = metrics[series]
        if m.kind == "histogram":
            return m, f"histogram `{series}` used without _bucket/_sum/_count"
        return m, None
    base = HIST_SUFFIX_RE.sub("", series)
    if base != series and base in metrics:
        m = metrics[base]
        if m.kind != "histogram":
            return m, f"`{series}`: `{base}` is a {m.kind}, not a histogram"
        return m, None
    return None, f"metric `{series}` is not in ops/METRICS.md"


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for ch in strip_strings(expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def call_arg(expr: str, open_idx: int) -> str:
    """The text inside the parenthesis that opens at expr[open_idx]."""
    depth = 0
    for i in range(open_idx, len(expr)):
        if expr[i] == "(":
            depth += 1
        elif expr[i] == ")":
            depth -= 1
            if depth == 0:
                return expr[open_idx + 1:i]
    return expr[open_idx + 1:]


def check_expr(expr: str, where: str, metrics: dict[str, Metric], variables: set[str], errors: list[str]):
    def err(msg: str):
        errors.append(f"{where}: {msg}\n    {expr}")

    if not balanced(expr):
        err("unbalanced brackets")
    for m in VAR_RE.finditer(expr):
        var = m.group(1) or m.group(2)
        if var not in variables and var not in BUILTINS:
            err(f"`${var}` is not a template variable or a Grafana builtin")
    bare = strip_strings(expr)
    names = set(NAME_RE.findall(bare))
    if re.search(r"\bup\b\s*\{", bare):
        names.add("up")
    for name in sorted(names):
        if name == "up":
            continue
        _, problem = resolve(name, metrics)
        if problem:
            err(problem)
    for rng in RANGE_RE.findall(bare):
        if rng != "$__rate_interval":
            err(f"range `[{rng}]` (use [$__rate_interval])")
    for fn, series in RATE_RE.findall(bare):
        m, _ = resolve(series, metrics)
        if m is not None and m.kind != "counter" and not HIST_SUFFIX_RE.search(series):
            err(f"{fn}() over {m.kind} `{series}`")
    for hm in re.finditer(r"histogram_quantile\(", bare):
        arg = call_arg(bare, hm.end() - 1)
        if not re.match(r"\s*0?\.\d+\s*,\s*sum by \(le\b", arg):
            err("histogram_quantile without `sum by (le, ...)`")
        if "_bucket" not in arg:
            err("histogram_quantile over something other than a _bucket series")
    # Selectors: label names and closed-set values.
    for sm in SELECTOR_RE.finditer(expr):
        series, body = sm.group(1), sm.group(2)
        if series in {"by", "without", "on", "ignoring", "group_left", "group_right"}:
            continue
        metric, _ = resolve(series, metrics) if series != "up" else (None, None)
        allowed = allowed_labels(metric, series)
        pos = 0
        while pos < len(body.strip()):
            mm = MATCHER_RE.match(body, pos)
            if not mm:
                err(f"cannot parse matchers `{{{body}}}`")
                break
            pos = mm.end()
            label, op, value = mm.groups()
            if label not in allowed:
                err(f"`{series}` has no label `{label}`")
                continue
            values = allowed[label]
            if values is None or "$" in value:
                continue
            if op == "=" and value not in values:
                err(f"`{series}{{{label}=\"{value}\"}}`: METRICS.md lists {sorted(values)}")
            elif op == "=~" and re.fullmatch(r"[\w-]+(\|[\w-]+)*", value):
                for alt in value.split("|"):
                    if alt not in values:
                        err(f"`{series}{{{label}=~\"{value}\"}}`: `{alt}` not in {sorted(values)}")
    # Aggregation labels: each must exist on every series aggregated.
    for bm in BY_RE.finditer(bare):
        labels = [x.strip() for x in bm.group(1).split(",") if x.strip()]
        arg = call_arg(bare, bm.end() - 1)
        inner = set(NAME_RE.findall(arg)) | ({"up"} if re.search(r"\bup\b", arg) else set())
        for series in inner:
            metric, _ = resolve(series, metrics) if series != "up" else (None, None)
            allowed = allowed_labels(metric, series)
            for label in labels:
                if label not in allowed:
                    err(f"aggregates `{series}` by `{label}`, which it does not carry")


def walk_panels(panels: list[dict]):
    for p in panels:
        yield p
        if p.get("type") == "row":
            yield from walk_panels(p.get("panels", []))


def var_query(v: dict) -> str | None:
    q = v.get("query")
    if isinstance(q, dict):
        q = q.get("query")
    return q if isinstance(q, str) else None


def label_values_expr(q: str) -> str | None:
    """The series selector inside label_values(expr, label), or None for label_values(label)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
    return m.group(1) if m else None


def substitute(expr: str, variables: set[str]) -> str:
    def repl(m):
        var = m.group(1) or m.group(2)
        return SUBST.get(var, ".*" if var in variables else m.group(0))
    return VAR_RE.sub(repl, expr)


def check_dashboard(path: pathlib.Path, metrics, errors: list[str], exprs: list[tuple[str, str, set]]) -> dict:
    where0 = path.name
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        errors.append(f"{where0}: invalid JSON: {e}")
        return {}

    def need(cond, msg):
        if not cond:
            errors.append(f"{where0}: {msg}")

    need(isinstance(d.get("uid"), str) and d["uid"].startswith("lakecache-"), "uid should be lakecache-…")
    need("lakecache" in d.get("tags", []), "tags should include lakecache")
    need(d.get("refresh") == "10s", "refresh should be 10s")
    need(d.get("time") == {"from": "now-1h", "to": "now"}, "time range should be last 1h")
    need(isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36, "schemaVersion should be ≥ 36")

    tvars = d.get("templating", {}).get("list", [])
    names = [v.get("name") for v in tvars]
    need(len(names) == len(set(names)), f"duplicate template variables {names}")
    variables = set(names)
    ds_vars = [v for v in tvars if v.get("name") == "datasource"]
    need(ds_vars and ds_vars[0].get("type") == "datasource" and ds_vars[0].get("query") == "prometheus",
         "needs a `datasource` variable of type datasource, query prometheus")
    for v in tvars:
        if v.get("type") != "query":
            continue
        need(v.get("datasource") == DS, f"variable {v.get('name')}: datasource should be {DS}")
        q = var_query(v)
        need(bool(q), f"variable {v.get('name')}: no query string")
        if q:
            inner = label_values_expr(q) or q
            check_expr(inner, f"{where0} variable {v['name']}", metrics, variables, errors)
            exprs.append((f"{where0} variable {v['name']}", inner, variables))

    ids: list[int] = []
    rects = []
    n_panels = n_targets = 0
    for p in walk_panels(d.get("panels", [])):
        pid = p.get("id")
        title = p.get("title", "?")
        where = f"{where0} panel {pid} '{title}'"
        ids.append(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh"):
            errors.append(f"{where}: gridPos incomplete {g}")
        else:
            if g["x"] + g["w"] > 24:
                errors.append(f"{where}: wider than the grid {g}")
            for other_pid, og in rects:
                if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                    errors.append(f"{where}: overlaps panel {other_pid}")
            rects.append((pid, g))
        if p.get("type") == "row":
            continue
        n_panels += 1
        if p.get("datasource") != DS:
            errors.append(f"{where}: datasource should be {DS}")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            errors.append(f"{where}: no unit in fieldConfig.defaults")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)):
            errors.append(f"{where}: duplicate refIds {refs}")
        for t in targets:
            n_targets += 1
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            if t.get("datasource") not in (None, DS):
                errors.append(f"{where}: target {t.get('refId')} datasource should be {DS}")
            check_expr(expr, f"{where} {t.get('refId')}", metrics, variables, errors)
            exprs.append((f"{where} {t.get('refId')}", expr, variables))
    need(all(isinstance(i, int) for i in ids), "panel without an integer id")
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    need(not dup, f"duplicate panel ids {dup}")
    return {"uid": d.get("uid"), "panels": n_panels, "targets": n_targets, "variables": names[1:]}


def check_provisioning(errors: list[str]):
    try:
        import yaml
    except ImportError:
        print("pyyaml not installed; provisioning files not checked")
        return
    ds_file = PROV_DIR / "datasources" / "lakecache.yml"
    db_file = PROV_DIR / "dashboards" / "lakecache.yml"
    try:
        ds = yaml.safe_load(ds_file.read_text())
        dsl = ds["datasources"]
        prom = [x for x in dsl if x.get("uid") == "lakecache-prometheus"]
        if not (prom and prom[0].get("type") == "prometheus" and prom[0].get("name") == "Prometheus"
                and prom[0].get("url") and prom[0].get("isDefault") is True):
            errors.append(f"{ds_file.name}: needs datasource Prometheus, uid lakecache-prometheus, url, isDefault")
    except Exception as e:  # noqa: BLE001 - report any shape problem
        errors.append(f"{ds_file}: {e!r}")
    try:
        db = yaml.safe_load(db_file.read_text())
        prov = db["providers"][0]
        if not (prov.get("type") == "file" and prov.get("folder") == "lakecache" and prov["options"].get("path")):
            errors.append(f"{db_file.name}: needs a file provider, folder lakecache, options.path")
    except Exception as e:  # noqa: BLE001
        errors.append(f"{db_file}: {e!r}")


def check_generated(errors: list[str]):
    sys.path.insert(0, str(HERE))
    try:
        import build_dashboards
    except ImportError:
        return
    for name, build in build_dashboards.DASHBOARDS.items():
        path = DASH_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != build_dashboards.render(build):
            errors.append(f"{name}: differs from build_dashboards.py output (run it and commit the result)")
    extra = {p.name for p in DASH_DIR.glob("*.json")} - set(build_dashboards.DASHBOARDS)
    if extra:
        errors.append(f"dashboards not produced by build_dashboards.py: {sorted(extra)}")


def check_promtool(exprs, errors: list[str]) -> str:
    promtool = shutil.which("promtool")
    if not promtool:
        return "promtool not found; PromQL parse check skipped"
    lines = ["groups:", "  - name: grafana_dashboards", "    rules:"]
    for i, (_, expr, variables) in enumerate(exprs):
        lines.append(f"      - record: grafana_check:expr_{i}")
        lines.append(f"        expr: {json.dumps(substitute(expr, variables))}")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        rules = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
    finally:
        pathlib.Path(rules).unlink(missing_ok=True)
    if r.returncode != 0:
        out = r.stdout + r.stderr
        for m in re.finditer(r"expr_(\d+)", out):
            i = int(m.group(1))
            if i < len(exprs):
                errors.append(f"{exprs[i][0]}: promtool rejects\n    {substitute(exprs[i][1], exprs[i][2])}")
        errors.append(f"promtool check rules failed:\n{out.strip()}")
        return "promtool: FAILED"
    return f"promtool: {len(exprs)} expressions parse"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print every expression with variables substituted")
    args = ap.parse_args()

    metrics = parse_metrics(METRICS_MD.read_text(encoding="utf-8"))
    if len(metrics) < 40:
        print(f"only {len(metrics)} metrics parsed from {METRICS_MD}; the table format changed?")
        return 1
    errors: list[str] = []
    exprs: list[tuple[str, str, set]] = []
    files = sorted(DASH_DIR.glob("*.json"))
    if not files:
        errors.append(f"no dashboards in {DASH_DIR}")
    summary = {f.name: check_dashboard(f, metrics, errors, exprs) for f in files}
    uids = [s.get("uid") for s in summary.values()]
    if len(uids) != len(set(uids)):
        errors.append(f"dashboard uids not unique: {uids}")
    check_provisioning(errors)
    check_generated(errors)
    prom = check_promtool(exprs, errors)

    used = {HIST_SUFFIX_RE.sub("", n) for _, e, _ in exprs for n in NAME_RE.findall(strip_strings(e))}
    unused = sorted(set(metrics) - used)

    if args.list:
        for where, expr, variables in exprs:
            print(f"{where}\n    {substitute(expr, variables)}")
    for name, s in summary.items():
        if s:
            print(f"{name}: uid={s['uid']} panels={s['panels']} targets={s['targets']} variables={s['variables']}")
    print(f"{len(metrics)} metrics in METRICS.md, {len(metrics) - len(unused)} used; unused: {', '.join(unused) or 'none'}")
    print(prom)
    if errors:
        print(f"\n{len(errors)} problem(s):")
        for e in errors:
            print(f"- {e}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
