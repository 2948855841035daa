#!/usr/bin/env python3
"""Writes the lakecache Grafana dashboards (ops/grafana/dashboards/*.json).

The JSON files are checked in; this script is how they are made, so the four dashboards share
one datasource variable, one panel style and one way of writing rates and quantiles. Edit here,
run `python3 ops/grafana/build_dashboards.py`, then `python3 ops/grafana/check_dashboards.py`.
The output is deterministic (no timestamps, no random ids): running it twice changes nothing.

Metric names come only from ops/METRICS.md (the check script enforces it).
"""

from __future__ import annotations

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"

# Scrape jobs (ops/METRICS.md, "Scrape labels").
JOB_CACHE = "lakecache-cache-node"
JOB_ROUTER = "lakecache-router"
JOB_SEARCH = "lakecache-search-node"


# ---------------------------------------------------------------------------------------------
# PromQL helpers


def sel(metric: str, *matchers: str) -> str:
    """`metric{m1,m2}`; matchers are written out (`tier="memory"`, `node=~"$node"`)."""
    ms = [m for m in matchers if m]
    return f"{metric}{{{','.join(ms)}}}" if ms else metric


def rate(metric: str, *matchers: str) -> str:
    return f"rate({sel(metric, *matchers)}{RATE})"


def srate(metric: str, *matchers: str, by: str = "") -> str:
    """`sum [by (…)] (rate(metric{…}[$__rate_interval]))`."""
    agg = f"sum by ({by}) " if by else "sum"
    return f"{agg}({rate(metric, *matchers)})"


def ratio(num: str, den: str) -> str:
    """num / den without a NaN when the denominator is 0 (idle)."""
    return f"{num} / clamp_min({den}, 1e-9)"


def zero_filled(num: str, like: str) -> str:
    """`num`, or 0 for every series of `like` that `num` lacks (an error counter that has not
    been incremented yet has no series at all; the ratio should read 0, not "no data")."""
    return f"({num} or (0 * {like}))"


def hq(q: float, metric: str, *matchers: str, by: str = "") -> str:
    """histogram_quantile over a `_bucket` series, summed by `le` (and `by`)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(metric + '_bucket', *matchers)}))"


# ---------------------------------------------------------------------------------------------
# Panels


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if fmt != "time_series":
        t["format"] = fmt
    return t


def targets(*pairs) -> list[dict]:
    """targets(("expr", "legend"), …) with refIds A, B, C…"""
    out = []
    for i, pair in enumerate(pairs):
        expr, legend = pair if isinstance(pair, tuple) else (pair, "")
        out.append(target(expr, legend, ref=chr(ord("A") + i)))
    return out


def thresholds(*steps) -> dict:
    """thresholds(("green", None), ("red", 0.05)) — the first step's value is the base."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


NEUTRAL = thresholds(("text", None))
RATIO_GOOD_HIGH = thresholds(("red", None), ("orange", 0.5), ("green", 0.8))
RATIO_BAD_HIGH = thresholds(("green", None), ("orange", 0.01), ("red", 0.05))


def timeseries(title: str, tgts: list[dict], unit: str, desc: str = "", *, min_=None, max_=None,
               stack: bool = False, legend_table: bool = False, decimals=None, overrides=None) -> dict:
    defaults = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "gradientMode": "none",
            "showPoints": "never",
            "spanNulls": False,
            "axisPlacement": "auto",
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
        "thresholds": NEUTRAL,
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if decimals is not None:
        defaults["decimals"] = decimals
    legend = {"showLegend": True, "placement": "bottom", "displayMode": "list", "calcs": []}
    if legend_table:
        legend = {"showLegend": True, "placement": "right", "displayMode": "table", "calcs": ["mean", "lastNotNull"]}
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, tgts: list[dict], unit: str, desc: str = "", *, th=NEUTRAL, text_mode: str = "auto",
         graph: bool = True, decimals=None, mappings=None) -> dict:
    defaults = {"unit": unit, "color": {"mode": "thresholds"}, "thresholds": th, "mappings": mappings or []}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": text_mode,
        },
    }


def gauge(title: str, tgts: list[dict], unit: str, desc: str = "", *, th=NEUTRAL, min_=0, max_=1) -> dict:
    return {
        "type": "gauge",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {"unit": unit, "min": min_, "max": max_, "color": {"mode": "thresholds"}, "thresholds": th},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
        },
    }


UP_MAPPINGS = [
    {"type": "value", "options": {
        "0": {"text": "ejected", "color": "red", "index": 0},
        "1": {"text": "up", "color": "green", "index": 1},
    }},
]


def state_timeline(title: str, tgts: list[dict], desc: str = "") -> dict:
    return {
        "type": "state-timeline",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": "none",
                "color": {"mode": "thresholds"},
                "thresholds": thresholds(("red", None), ("green", 1)),
                "mappings": UP_MAPPINGS,
                "custom": {"fillOpacity": 80, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "alignValue": "left",
            "legend": {"showLegend": False, "placement": "bottom", "displayMode": "list"},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def table(title: str, expr: str, desc: str = "", *, value_name: str = "Value", mappings=None, th=NEUTRAL) -> dict:
    return {
        "type": "table",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": [target(expr, ref="A", instant=True, fmt="table")],
        "fieldConfig": {
            "defaults": {
                "unit": "none",
                "color": {"mode": "thresholds"},
                "thresholds": th,
                "mappings": mappings or [],
                "custom": {"align": "auto", "cellOptions": {"type": "color-text"}},
            },
            "overrides": [],
        },
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
        "transformations": [
            {"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True, "job": True},
                "indexByName": {},
                "renameByName": {"Value": value_name},
            }},
        ],
    }


def heatmap(title: str, expr: str, unit: str, desc: str = "") -> dict:
    return {
        "type": "heatmap",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": [dict(target(expr, "{{le}}", fmt="heatmap"))],
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False}}},
                        "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5,
                      "steps": 64, "reverse": False, "fill": "dark-orange"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        },
    }


# ---------------------------------------------------------------------------------------------
# Dashboard assembly


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new line, and
    numbers them in order (ids are stable as long as the order is)."""

    def __init__(self):
        self.panels: list[dict] = []
        self.x = 0
        self.y = 0
        self.line_h = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def _newline(self):
        self.y += self.line_h
        self.x = 0
        self.line_h = 0

    def row(self, title: str):
        if self.x:
            self._newline()
        self.panels.append({
            "type": "row", "title": title, "id": self._next_id(), "collapsed": False, "datasource": DS,
            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": [],
        })
        self.y += 1

    def add(self, panel: dict, w: int, h: int = 8):
        if self.x + w > 24:
            self._newline()
        panel = {"id": self._next_id(), "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h}, **panel}
        if not panel.get("description"):
            panel.pop("description", None)
        self.panels.append(panel)
        self.x += w
        self.line_h = max(self.line_h, h)


def datasource_var() -> dict:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Prometheus", "value": "lakecache-prometheus"},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_var(name: str, label: str, query: str, *, multi: bool = True, include_all: bool = True) -> dict:
    v = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {},
        "hide": 0,
        "includeAll": include_all,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "skipUrlSync": False,
    }
    if include_all:
        # One regex instead of every value joined; table names hold `$` (ns$name).
        v["allValue"] = ".*"
    return v


def dashboard(uid: str, title: str, description: str, layout: Layout, variables: list[dict]) -> dict:
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{
            "title": "lakecache",
            "type": "dashboards",
            "tags": ["lakecache"],
            "asDropdown": True,
            "includeVars": False,
            "keepTime": True,
            "icon": "external link",
            "targetBlank": False,
            "tooltip": "",
            "url": "",
        }],
        "liveNow": False,
        "panels": layout.panels,
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["lakecache"],
        "templating": {"list": [datasource_var(), *variables]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# ---------------------------------------------------------------------------------------------
# Fleet overview

N = 'node=~"$node"'
HITS = "cachenode_cache_hits_total"
MEM = 'tier="memory"'
S5XX = 'status=~"5.."'
ERR = 'outcome="error"'
MISSES = "cachenode_cache_misses_total"


def hit_ratio_all(*m: str, by: str = "") -> str:
    """Pages not read from the origin: hits of any tier over lookups (every lookup tries
    memory first, so memory hits + memory misses = all lookups)."""
    den_misses = srate(MISSES, MEM, *m, by=by)
    if not by:
        den_misses = f"({den_misses} or vector(0))"
    return ratio(srate(HITS, *m, by=by), f"({srate(HITS, MEM, *m, by=by)} + {den_misses})")


def hit_ratio_tier(tier: str, *m: str) -> str:
    t = f'tier="{tier}"'
    return ratio(srate(HITS, t, *m), f"({srate(HITS, t, *m)} + ({srate(MISSES, t, *m)} or vector(0)))")


def hit_ratio_by_tier(*m: str) -> str:
    t = 'tier=~"memory|disk"'
    return ratio(srate(HITS, t, *m, by="tier"), f"({srate(HITS, t, *m, by='tier')} + {srate(MISSES, t, *m, by='tier')})")


def fleet() -> dict:
    L = Layout()
    L.row("Cache effectiveness")
    L.add(stat("Fleet hit ratio", targets(hit_ratio_all()), "percentunit",
               "Pages served by a cache tier (memory or disk) over all page lookups, fleet-wide.",
               th=RATIO_GOOD_HIGH), 4, 4)
    L.add(stat("Memory hit ratio", targets(hit_ratio_tier("memory")), "percentunit",
               "Lookups answered by the memory tier over all lookups.", th=RATIO_GOOD_HIGH), 4, 4)
    L.add(stat("Disk hit ratio", targets(hit_ratio_tier("disk")), "percentunit",
               "Of the lookups memory missed, the share the page store answered.", th=RATIO_GOOD_HIGH), 4, 4)
    L.add(stat("Origin GETs/s", targets(srate("cachenode_origin_requests_total", 'op="get"')), "reqps",
               "GET requests the fleet sent to the S3 origins."), 4, 4)
    L.add(stat("Origin GETs saved/s", targets(srate(HITS)), "ops",
               "Pages served from a cache tier instead of the origin."), 4, 4)
    L.add(stat("Origin error ratio",
               targets(ratio(f"({srate('cachenode_origin_errors_total')} or vector(0))",
                             srate("cachenode_origin_requests_total"))),
               "percentunit", "Failed origin requests over all origin requests.", th=RATIO_BAD_HIGH), 4, 4)

    L.add(timeseries("Hit ratio", targets(
        (hit_ratio_all(), "fleet"),
        (hit_ratio_by_tier(), "{{tier}}"),
    ), "percentunit", "Fleet hit ratio (pages not read from the origin) and each tier's own hit ratio.",
        min_=0, max_=1), 12)
    L.add(timeseries("Origin GETs vs pages saved", targets(
        (srate("cachenode_origin_requests_total", 'op="get"'), "origin GETs"),
        (srate(HITS), "pages saved (cache hits)"),
    ), "ops", "Origin GETs per second against page lookups a cache tier answered."), 12)
    L.add(timeseries("Bytes served by tier", targets(
        (srate("cachenode_cache_served_bytes_total", by="tier"), "{{tier}}"),
        (srate("cachenode_cache_served_bytes_total", 'tier=~"memory|disk"'), "saved (memory + disk)"),
    ), "Bps", "Bytes sent to clients by the tier they came from; 'saved' is what did not come from the origin.",
        overrides=[{"matcher": {"id": "byName", "options": "saved (memory + disk)"},
                    "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                                   {"id": "custom.fillOpacity", "value": 0}]}]), 12)
    L.add(timeseries("Origin error ratio by op", targets(
        (ratio(zero_filled(srate("cachenode_origin_errors_total", by="op"), srate("cachenode_origin_requests_total", by="op")),
               srate("cachenode_origin_requests_total", by="op")), "{{op}}"),
    ), "percentunit", "Failed origin requests over origin requests, per S3 operation.", min_=0), 12)

    L.row("Savings")
    avoided = srate("cachenode_origin_requests_avoided_total")
    saved_bytes = srate("cachenode_cache_served_bytes_total", 'tier=~"memory|disk"')
    get_price = "scalar(max(cachenode_pricing_dollars_per_1000_gets))"
    byte_price = "scalar(max(cachenode_pricing_dollars_per_gib))"
    gets_dollars = f"{avoided} * 3600 / 1000 * {get_price}"
    bytes_dollars = f"{saved_bytes} * 3600 / 1073741824 * {byte_price}"
    L.add(stat("S3 GETs avoided/s", targets(avoided), "reqps",
               "Reads the cache nodes answered without any origin request: each a GET the origin did not serve."),
          6, 4)
    L.add(stat("Saved per hour", targets(f"{gets_dollars} + {bytes_dollars}"), "currencyUSD",
               "GETs avoided and bytes served from memory or disk, at the [pricing] the cache nodes are "
               "configured with (cachenode_pricing_*), per hour at the current rate."), 6, 4)
    L.add(timeseries("Dollars saved per hour", targets(
        (gets_dollars, "GETs avoided"),
        (bytes_dollars, "transfer avoided"),
    ), "currencyUSD", "What the origin would have charged for the reads the fleet answered, per hour, "
       "split into requests and bytes ([pricing] get_per_1000, transfer_per_gib)."), 12, 4)

    L.row("Nodes and load")
    L.add(stat("Targets up", targets(
        (f'sum by (job) (up{{job=~"{JOB_CACHE}|{JOB_ROUTER}|{JOB_SEARCH}"}})', "{{job}}"),
    ), "none", "Scrape targets answering, per job.", graph=False, decimals=0), 8, 5)
    L.add(stat("Ring live nodes", targets(("min(router_ring_live_nodes)", "live")), "none",
               "Cache nodes in the router's ring (not ejected); the lowest across routers.", decimals=0), 4, 5)
    L.add(stat("Cache nodes down", targets(
        (f'count(up{{job="{JOB_CACHE}"}} == 0) or vector(0)', "down"),
    ), "none", "Cache node scrape targets not answering.",
        th=thresholds(("green", None), ("red", 1)), decimals=0), 4, 5)
    L.add(stat("Cache nodes ejected", targets(
        (f"count(min by (node) (router_ring_node_up{{{N}}}) == 0) or vector(0)", "ejected"),
    ), "none", "Nodes some router has ejected from its ring.",
        th=thresholds(("green", None), ("red", 1)), decimals=0), 8, 5)
    L.add(state_timeline("Ring membership (router view)", targets(
        (f"min by (node) (router_ring_node_up{{{N}}})", "{{node}}"),
    ), "1 while a node is in the ring, 0 while ejected (the lowest across routers)."), 24, 6)
    L.add(timeseries("Requests by node (router upstream)", targets(
        (srate("router_upstream_requests_total", N, by="node"), "{{node}}"),
    ), "reqps", "Requests the routers sent to each cache node: the per-node load the ring produces.",
        legend_table=True), 12)
    L.add(timeseries("Requests by node (cache node S3)", targets(
        (srate("cachenode_s3_requests_total", N, by="node"), "{{node}}"),
    ), "reqps", "Requests each cache node answered on its S3 port (router traffic plus any direct clients).",
        legend_table=True), 12)
    L.add(timeseries("Hit ratio by node", targets(
        (hit_ratio_all(N, by="node"), "{{node}}"),
    ), "percentunit", "Pages not read from the origin, per cache node.", min_=0, max_=1, legend_table=True), 12)
    L.add(timeseries("Origin GETs by node", targets(
        (srate("cachenode_origin_requests_total", 'op="get"', N, by="node"), "{{node}}"),
    ), "reqps", "GETs each cache node sent to the origin.", legend_table=True), 12)

    L.row("Page store")
    L.add(timeseries("Page-store IOPS by node", targets(
        (f"sum by (node) ({rate('cachenode_pagestore_reads_total', N)} + {rate('cachenode_pagestore_writes_total', N)})",
         "{{node}}"),
    ), "iops", "Page reads plus page writes per second on each node's page store.", legend_table=True), 12)
    L.add(timeseries("Page-store read p99 by node", targets(
        (hq(0.99, "cachenode_pagestore_read_duration_microseconds", N, by="node"), "{{node}}"),
    ), "µs", "99th percentile of one page-store read, submission to completion, checksum included.",
        legend_table=True), 12)

    L.row("Search")
    L.add(stat("Search QPS", targets(srate("searchnode_query_requests_total")), "reqps",
               "Table queries per second, all search nodes."), 4, 8)
    L.add(stat("Search p99", targets(hq(0.99, "searchnode_query_duration_milliseconds")), "ms",
               "99th percentile query latency, planning to last batch, all kinds.",
               th=thresholds(("green", None), ("orange", 100), ("red", 500))), 4, 8)
    L.add(timeseries("Search QPS by kind", targets(
        (srate("searchnode_query_requests_total", by="kind"), "{{kind}}"),
    ), "reqps", "Queries per second by kind (vector, fts, hybrid, scan)."), 8)
    L.add(timeseries("Search p99 by kind", targets(
        (hq(0.99, "searchnode_query_duration_milliseconds", by="kind"), "{{kind}}"),
    ), "ms", "99th percentile query latency by kind."), 8)
    L.add(timeseries("Origin requests per query by table", targets(
        (ratio(srate("searchnode_query_origin_requests_total", by="table"),
               srate("searchnode_query_requests_total", by="table")), "{{table}}"),
    ), "none", "Origin requests the cache nodes made for a table's queries, per query (each answer's "
       "x-lakecache-origin-requests): 0 when warm."), 24)

    return dashboard("lakecache-fleet", "lakecache / Fleet overview",
                     "Cache effectiveness, load and health across all cache nodes, routers and search nodes.",
                     L, [query_var("node", "Cache node", "label_values(cachenode_cache_hits_total, node)")])


# ---------------------------------------------------------------------------------------------
# Cache node detail


def cache_node() -> dict:
    L = Layout()
    L.row("Overview")
    L.add(stat("Hit ratio", targets(hit_ratio_all(N)), "percentunit",
               "Pages served by memory or disk over all lookups on this node.", th=RATIO_GOOD_HIGH), 4, 4)
    L.add(stat("Memory hit ratio", targets(hit_ratio_tier("memory", N)), "percentunit", th=RATIO_GOOD_HIGH), 4, 4)
    L.add(stat("Disk hit ratio", targets(hit_ratio_tier("disk", N)), "percentunit",
               "Of the lookups memory missed, the share the page store answered.", th=RATIO_GOOD_HIGH), 4, 4)
    L.add(stat("S3 requests/s", targets(srate("cachenode_s3_requests_total", N)), "reqps"), 4, 4)
    L.add(stat("Origin GETs/s", targets(srate("cachenode_origin_requests_total", 'op="get"', N)), "reqps"), 4, 4)
    L.add(stat("Page-store read p99", targets(hq(0.99, "cachenode_pagestore_read_duration_microseconds", N)), "µs",
               th=thresholds(("green", None), ("orange", 1000), ("red", 10000))), 4, 4)

    L.row("Read path")
    L.add(timeseries("Hit ratio per tier", targets(
        (hit_ratio_all(N), "all tiers"),
        (hit_ratio_by_tier(N), "{{tier}}"),
    ), "percentunit", "Each tier's hits over the lookups that reached it; 'all tiers' is pages not read from the origin.",
        min_=0, max_=1), 8)
    L.add(timeseries("Lookups by tier", targets(
        (srate(HITS, N, by="tier"), "{{tier}} hits"),
        (srate(MISSES, N, by="tier"), "{{tier}} misses"),
    ), "ops", "Page lookups per second by tier and result; every lookup tries memory, then disk, then the origin."), 8)
    L.add(timeseries("Served bytes by tier", targets(
        (srate("cachenode_cache_served_bytes_total", N, by="tier"), "{{tier}}"),
    ), "Bps", "Bytes sent to clients by the tier they came from.", stack=True), 8)

    L.row("Memory tier")
    L.add(timeseries("Memory used vs capacity", targets(
        (f"sum(cachenode_memory_used_bytes{{{N}}})", "used"),
        (f"sum(cachenode_memory_capacity_bytes{{{N}}})", "capacity"),
    ), "bytes", "Bytes of pages held in memory against cache.memory_capacity.", min_=0), 12)
    L.add(gauge("Memory fill", targets(
        ratio(f"sum(cachenode_memory_used_bytes{{{N}}})", f"sum(cachenode_memory_capacity_bytes{{{N}}})"),
    ), "percentunit", th=thresholds(("green", None), ("orange", 0.98))), 4)
    L.add(timeseries("Memory evictions", targets(
        (srate("cachenode_memory_evictions_total", N), "evicted"),
    ), "ops", "Pages evicted from memory per second."), 8)

    L.row("Page store")
    L.add(stat("IO engine", targets(
        (f"max by (engine) (cachenode_pagestore_io_engine{{{N}}}) > 0", "{{engine}}"),
    ), "none", "The I/O engine in use (uring, or pread when io_uring was refused).", text_mode="name", graph=False), 4, 4)
    L.add(stat("Recovered pages", targets(f"sum(cachenode_pagestore_recovered_pages{{{N}}})"), "short",
               "Pages found valid at start-up (what survived the last restart).", graph=False), 4, 4)
    L.add(stat("Page-store fill", targets(
        ratio(f"sum(cachenode_pagestore_used_bytes{{{N}}})", f"sum(cachenode_pagestore_capacity_bytes{{{N}}})"),
    ), "percentunit", "Used bytes over disk.capacity.", graph=False), 4, 4)
    L.add(stat("Writes dropped/s", targets(srate("cachenode_pagestore_writes_dropped_total", N)), "ops",
               "Pages not written: store full of pinned pages, or the write queue full.",
               th=thresholds(("green", None), ("orange", 0.001))), 4, 4)
    L.add(stat("Errors/s", targets(srate("cachenode_pagestore_errors_total", N)), "ops",
               "Failed page-store reads or writes (the page is then read from the origin).",
               th=thresholds(("green", None), ("red", 0.001))), 4, 4)
    L.add(stat("Checksum failures/s", targets(srate("cachenode_pagestore_checksum_failures_total", N)), "ops",
               "Pages whose checksum did not match (dropped, re-read from the origin).",
               th=thresholds(("green", None), ("red", 0.001))), 4, 4)
    L.add(timeseries("Page-store IOPS", targets(
        (srate("cachenode_pagestore_reads_total", N), "reads"),
        (srate("cachenode_pagestore_writes_total", N), "writes"),
    ), "iops"), 8)
    L.add(timeseries("Page-store throughput", targets(
        (srate("cachenode_pagestore_read_bytes_total", N), "read"),
        (srate("cachenode_pagestore_write_bytes_total", N), "write"),
    ), "Bps", "Bytes read and written per second (aligned I/O size)."), 8)
    L.add(timeseries("Page-store evictions", targets(
        (srate("cachenode_pagestore_evictions_total", N), "evicted"),
    ), "ops", "Pages evicted from the page store to make room."), 8)
    L.add(timeseries("Page-store read latency", targets(
        *[(hq(q, "cachenode_pagestore_read_duration_microseconds", N), f"p{lbl}")
          for q, lbl in ((0.5, "50"), (0.99, "99"), (0.999, "99.9"))],
    ), "µs", "One page-store read, submission to completion, checksum included."), 12)
    L.add(timeseries("Page-store write latency", targets(
        *[(hq(q, "cachenode_pagestore_write_duration_microseconds", N), f"p{lbl}")
          for q, lbl in ((0.5, "50"), (0.99, "99"), (0.999, "99.9"))],
    ), "µs", "One page write, submission to completion."), 12)
    L.add(heatmap("Page-store read latency distribution",
                  f"sum by (le) (increase(cachenode_pagestore_read_duration_microseconds_bucket{{{N}}}{RATE}))",
                  "µs", "Reads per latency bucket in each interval (the histogram's buckets, not estimated)."), 24, 9)
    L.add(timeseries("Dropped writes, errors, checksum failures", targets(
        (srate("cachenode_pagestore_writes_dropped_total", N), "writes dropped"),
        (srate("cachenode_pagestore_errors_total", N), "errors"),
        (srate("cachenode_pagestore_checksum_failures_total", N), "checksum failures"),
    ), "ops", "Each of these sends the page to the origin instead (or leaves it uncached)."), 12)
    L.add(timeseries("Page-store bytes", targets(
        (f"sum(cachenode_pagestore_used_bytes{{{N}}})", "used"),
        (f"sum(cachenode_pagestore_pinned_bytes{{{N}}})", "pinned"),
        (f"sum(cachenode_pagestore_capacity_bytes{{{N}}})", "capacity"),
    ), "bytes", min_=0), 12)

    L.row("Pins")
    L.add(stat("Pin rules", targets(f"sum(cachenode_pins_rules{{{N}}})"), "none",
               "Pin rules in force (config plus admin API).", graph=False, decimals=0), 4)
    L.add(timeseries("Pinned bytes vs budget", targets(
        (f"sum(cachenode_pagestore_pinned_bytes{{{N}}})", "pinned"),
        (f"sum(cachenode_pins_budget_bytes{{{N}}})", "budget"),
    ), "bytes", "Bytes of pinned pages held in the page store against pins.budget.", min_=0), 14)
    L.add(gauge("Pin budget used", targets(
        ratio(f"sum(cachenode_pagestore_pinned_bytes{{{N}}})", f"sum(cachenode_pins_budget_bytes{{{N}}})"),
    ), "percentunit", th=thresholds(("green", None), ("orange", 0.9), ("red", 1))), 6)

    L.row("Origin")
    L.add(timeseries("Origin requests by op", targets(
        (srate("cachenode_origin_requests_total", N, by="op"), "{{op}}"),
    ), "reqps"), 8)
    L.add(timeseries("Origin errors by op", targets(
        (srate("cachenode_origin_errors_total", N, by="op"), "{{op}}"),
    ), "reqps", "Failed origin requests per second."), 8)
    L.add(timeseries("Origin received bytes", targets(
        (srate("cachenode_origin_received_bytes_total", N), "received"),
    ), "Bps"), 8)
    L.add(timeseries("Origin latency by op", targets(
        (hq(0.5, "cachenode_origin_request_duration_milliseconds", N, by="op"), "{{op}} p50"),
        (hq(0.99, "cachenode_origin_request_duration_milliseconds", N, by="op"), "{{op}} p99"),
    ), "ms", "One origin request, to its headers."), 12)
    L.add(timeseries("In-flight origin fetches", targets(
        (f"sum(cachenode_cache_inflight_requests{{{N}}})", "in flight"),
    ), "short", "Page fetches from the origin in flight.", min_=0), 6)
    L.add(timeseries("Single-flight joins", targets(
        (srate("cachenode_cache_singleflight_joins_total", N), "joins"),
    ), "ops", "Lookups that joined a fetch already in flight instead of asking the origin again."), 6)

    L.row("S3 surface")
    L.add(timeseries("S3 requests by method and status", targets(
        (srate("cachenode_s3_requests_total", N, by="method, status"), "{{method}} {{status}}"),
    ), "reqps", legend_table=True), 12)
    L.add(timeseries("S3 latency by method", targets(
        (hq(0.5, "cachenode_s3_request_duration_milliseconds", N, by="method"), "{{method}} p50"),
        (hq(0.99, "cachenode_s3_request_duration_milliseconds", N, by="method"), "{{method}} p99"),
    ), "ms", "Request to response headers.", legend_table=True), 12)

    L.row("Host")
    L.add(timeseries("File system free ratio by role", targets(
        (ratio(f"sum by (role) (cachenode_filesystem_avail_bytes{{{N}}})",
               f"sum by (role) (cachenode_filesystem_size_bytes{{{N}}})"), "{{role}}"),
    ), "percentunit", "Free space (for unprivileged users) of the file systems holding the page store file and "
        "multipart staging.", min_=0, max_=1), 12)
    L.add(timeseries("File system free bytes by role", targets(
        (f"sum by (role) (cachenode_filesystem_avail_bytes{{{N}}})", "{{role}} free"),
        (f"sum by (role) (cachenode_filesystem_size_bytes{{{N}}})", "{{role}} size"),
    ), "bytes", min_=0), 12)

    return dashboard("lakecache-cache-node", "lakecache / Cache node",
                     "One cache node in detail: tiers, page store, pins, origin, S3 surface, host.",
                     L, [query_var("node", "Cache node", "label_values(cachenode_cache_hits_total, node)",
                                   multi=False, include_all=False)])


# ---------------------------------------------------------------------------------------------
# Router

RI = 'instance=~"$instance"'


def router() -> dict:
    L = Layout()
    req = "router_s3_requests_total"
    L.row("Overview")
    L.add(stat("Client requests/s", targets(srate(req, RI)), "reqps"), 4, 4)
    L.add(stat("Client 5xx ratio", targets(
        ratio(f"({srate(req, S5XX, RI)} or vector(0))", srate(req, RI))),
        "percentunit", "Client requests answered with a 5xx status.", th=RATIO_BAD_HIGH), 4, 4)
    L.add(stat("Client p99", targets(hq(0.99, "router_s3_request_duration_milliseconds", RI)), "ms",
               "Client request to response headers, all methods."), 4, 4)
    L.add(stat("Ring live nodes", targets(f"min(router_ring_live_nodes{{{RI}}})"), "none", decimals=0), 4, 4)
    L.add(stat("Failovers/s", targets(srate("router_upstream_failovers_total", RI)), "ops",
               th=thresholds(("green", None), ("orange", 0.1))), 4, 4)
    L.add(stat("Hedges/s", targets(srate("router_upstream_hedges_total", RI)), "ops"), 4, 4)

    L.row("Clients (S3)")
    L.add(timeseries("Client requests by method and status", targets(
        (srate(req, RI, by="method, status"), "{{method}} {{status}}"),
    ), "reqps", legend_table=True), 12)
    L.add(timeseries("Client latency by method", targets(
        (hq(0.5, "router_s3_request_duration_milliseconds", RI, by="method"), "{{method}} p50"),
        (hq(0.99, "router_s3_request_duration_milliseconds", RI, by="method"), "{{method}} p99"),
    ), "ms", "Client request to response headers.", legend_table=True), 12)

    L.row("Upstream (cache nodes)")
    up = "router_upstream_requests_total"
    L.add(timeseries("Per-node load", targets(
        (srate(up, N, RI, by="node"), "{{node}}"),
    ), "reqps", "Requests sent to each cache node; an even ring gives even lines.", legend_table=True), 12)
    L.add(timeseries("Upstream requests by node and op", targets(
        (srate(up, N, RI, by="node, op"), "{{node}} {{op}}"),
    ), "reqps", legend_table=True), 12)
    L.add(timeseries("Upstream bytes by node", targets(
        (srate("router_upstream_bytes_total", N, RI, by="node"), "{{node}}"),
    ), "Bps", "Body bytes received from each cache node.", legend_table=True), 12)
    L.add(timeseries("Upstream first byte by node", targets(
        (hq(0.5, "router_upstream_first_byte_milliseconds", N, RI, by="node"), "{{node}} p50"),
        (hq(0.99, "router_upstream_first_byte_milliseconds", N, RI, by="node"), "{{node}} p99"),
    ), "ms", "A cache node's time to response headers, as the router sees it.", legend_table=True), 12)

    L.row("Ring")
    L.add(timeseries("Ring live nodes", targets(
        (f"router_ring_live_nodes{{{RI}}}", "{{instance}}"),
    ), "none", "Cache nodes in each router's ring (not ejected).", min_=0, decimals=0), 8)
    L.add(table("Node state", f"max by (instance, node) (router_ring_node_up{{{N},{RI}}})",
                "Per router (instance) and cache node: up while in the ring, ejected otherwise.",
                value_name="state", mappings=UP_MAPPINGS, th=thresholds(("red", None), ("green", 1))), 8)
    L.add(timeseries("Ejections by node", targets(
        (f"sum by (node) (increase(router_ring_ejections_total{{{N},{RI}}}{RATE}))", "{{node}}"),
    ), "short", "Times a node was ejected from a router's ring, per interval.", min_=0), 8)
    L.add(state_timeline("Ring membership", targets(
        (f"min by (node) (router_ring_node_up{{{N},{RI}}})", "{{node}}"),
    ), "1 while the node is in the ring, 0 while ejected (the lowest across routers)."), 24, 6)

    L.row("Failover and hedging")
    L.add(timeseries("Failovers, hedges, retries refused", targets(
        (srate("router_upstream_failovers_total", RI), "failovers"),
        (srate("router_upstream_hedges_total", RI), "hedges"),
        (srate("router_upstream_retries_refused_total", RI), "retries refused"),
    ), "ops", "Failovers move a read to the next owner after a failure; hedges re-send a slow read to a second "
        "owner; the retry budget refuses failovers beyond its share."), 12)
    L.add(timeseries("Hedges and failovers per upstream GET", targets(
        (ratio(srate("router_upstream_hedges_total", RI), srate(up, 'op="get"', RI)), "hedges"),
        (ratio(srate("router_upstream_failovers_total", RI), srate(up, 'op="get"', RI)), "failovers"),
    ), "percentunit", min_=0), 12)

    return dashboard("lakecache-router", "lakecache / Router",
                     "The consistent-hash router: client traffic, per-node load, ring membership, failover.",
                     L, [
                         query_var("node", "Cache node", "label_values(router_upstream_requests_total, node)"),
                         query_var("instance", "Router", f'label_values(up{{job="{JOB_ROUTER}"}}, instance)'),
                     ])


# ---------------------------------------------------------------------------------------------
# Search

SI = 'instance=~"$instance"'
ST = 'table=~"$table"'


def search() -> dict:
    L = Layout()
    q = "searchnode_query_requests_total"
    qd = "searchnode_query_duration_milliseconds"
    pc = "searchnode_pagecache_reads_total"
    http = "searchnode_http_requests_total"

    L.row("Overview")
    L.add(stat("QPS", targets(srate(q, SI, ST)), "reqps", "Table queries per second."), 4, 4)
    L.add(stat("Query p99", targets(hq(0.99, qd, SI, ST)), "ms", "Planning to last batch, all kinds.",
               th=thresholds(("green", None), ("orange", 100), ("red", 500))), 4, 4)
    L.add(stat("Query error ratio", targets(
        ratio(f"({srate(q, ERR, SI, ST)} or vector(0))", srate(q, SI, ST))),
        "percentunit", th=RATIO_BAD_HIGH), 4, 4)
    L.add(stat("HTTP 5xx ratio", targets(
        ratio(f"({srate(http, S5XX, SI)} or vector(0))", srate(http, SI))),
        "percentunit", th=RATIO_BAD_HIGH), 4, 4)
    L.add(stat("Open tables", targets(f"sum(searchnode_catalog_open_tables{{{SI}}})"), "none", decimals=0), 4, 4)
    L.add(stat("Page cache hit ratio", targets(
        ratio(srate(pc, 'result="hit"', SI), srate(pc, SI))), "percentunit",
        "Blocks found in the search node's own page cache over blocks looked up.", th=RATIO_GOOD_HIGH), 4, 4)

    L.row("Queries")
    L.add(timeseries("QPS by kind", targets(
        (srate(q, SI, ST, by="kind"), "{{kind}}"),
    ), "reqps", stack=True), 12)
    L.add(timeseries("QPS by table", targets(
        (srate(q, SI, ST, by="table"), "{{table}}"),
    ), "reqps", legend_table=True), 12)
    L.add(timeseries("Query latency by kind", targets(
        (hq(0.5, qd, SI, ST, by="kind"), "{{kind}} p50"),
        (hq(0.99, qd, SI, ST, by="kind"), "{{kind}} p99"),
    ), "ms", "One query, planning to last batch."), 12)
    L.add(timeseries("Query error ratio by kind", targets(
        (ratio(zero_filled(srate(q, 'outcome="error"', SI, ST, by="kind"), srate(q, SI, ST, by="kind")),
               srate(q, SI, ST, by="kind")), "{{kind}}"),
    ), "percentunit", min_=0), 12)
    L.add(timeseries("Result rows by kind", targets(
        (hq(0.5, "searchnode_query_result_rows", SI, ST, by="kind"), "{{kind}} p50"),
        (hq(0.99, "searchnode_query_result_rows", SI, ST, by="kind"), "{{kind}} p99"),
    ), "short", "Rows a query returned (buckets 0, 1, 10, … 100 000: the quantile is coarse).", min_=0), 12)
    L.add(timeseries("Query p99 by table", targets(
        (hq(0.99, qd, SI, ST, by="table"), "{{table}}"),
    ), "ms", legend_table=True), 12)

    L.row("HTTP API")
    L.add(timeseries("HTTP requests by route and status", targets(
        (srate(http, SI, by="route, status"), "{{route}} {{status}}"),
    ), "reqps", legend_table=True), 12)
    L.add(timeseries("HTTP latency by route", targets(
        (hq(0.5, "searchnode_http_request_duration_milliseconds", SI, by="route"), "{{route}} p50"),
        (hq(0.99, "searchnode_http_request_duration_milliseconds", SI, by="route"), "{{route}} p99"),
    ), "ms", "Request to response.", legend_table=True), 12)

    L.row("SQL")
    L.add(timeseries("SQL statements by outcome", targets(
        (srate("searchnode_sql_requests_total", SI, by="outcome"), "{{outcome}}"),
    ), "reqps", "POST /v1/sql statements per second.", stack=True), 12)
    L.add(timeseries("SQL latency", targets(
        (hq(0.5, "searchnode_sql_duration_milliseconds", SI), "p50"),
        (hq(0.99, "searchnode_sql_duration_milliseconds", SI), "p99"),
    ), "ms"), 12)

    L.row("Catalog")
    L.add(timeseries("Open tables", targets(
        (f"searchnode_catalog_open_tables{{{SI}}}", "{{instance}}"),
    ), "none", min_=0, decimals=0), 8)
    L.add(timeseries("Table version served", targets(
        (f"max by (instance, table) (searchnode_catalog_table_version{{{SI},{ST}}})", "{{table}} @ {{instance}}"),
    ), "none", "The table version each search node serves; lines that part show nodes on different versions.",
        decimals=0, legend_table=True), 8)
    L.add(timeseries("Version refreshes by table", targets(
        (srate("searchnode_catalog_refreshes_total", SI, ST, by="table"), "{{table}}"),
    ), "ops", "Checks for a newer table version (read-consistency interval or min-version header)."), 8)

    L.row("Page cache")
    L.add(timeseries("Page cache hit ratio", targets(
        (ratio(srate(pc, 'result="hit"', SI), srate(pc, SI)), "hit ratio"),
    ), "percentunit", "Blocks found in the search node's own page cache over blocks looked up.", min_=0, max_=1), 8)
    L.add(timeseries("Page cache read vs fill", targets(
        (srate("searchnode_pagecache_read_bytes_total", SI), "read by Lance"),
        (srate("searchnode_pagecache_fill_bytes_total", SI), "filled from the fleet"),
    ), "Bps", "Bytes Lance read through the page cache against bytes the cache fetched from the cache nodes."), 8)
    L.add(timeseries("Page cache used", targets(
        (f"searchnode_pagecache_used_bytes{{{SI}}}", "{{instance}}"),
    ), "bytes", min_=0), 8)

    L.row("I/O per query")
    per_query = lambda m: ratio(srate(m, SI, ST, by="table"), srate(q, SI, ST, by="table"))  # noqa: E731
    L.add(timeseries("Origin requests per query", targets(
        (per_query("searchnode_query_origin_requests_total"), "{{table}}"),
    ), "none", "Origin requests the cache nodes made for a table's queries, per query (the answers' "
       "x-lakecache-origin-requests): 0 when everything is cached.", legend_table=True), 8)
    L.add(timeseries("Fleet reads and page-cache hits per query", targets(
        (per_query("searchnode_query_fleet_requests_total"), "{{table}} fleet reads"),
        (per_query("searchnode_query_page_cache_hits_total"), "{{table}} page-cache hits"),
    ), "none", "Reads a query sent to cache nodes, and blocks this node's page cache answered.",
        legend_table=True), 8)
    L.add(timeseries("I/O wait per query", targets(
        (f"{per_query('searchnode_query_io_wait_microseconds_total')} / 1000", "{{table}}"),
    ), "ms", "Time a query spent with I/O outstanding.", legend_table=True), 8)
    L.add(timeseries("Budget refusals", targets(
        (srate("searchnode_query_budget_refusals_total", SI, ST, by="table"), "{{table}}"),
    ), "ops", "Queries refused (412) for needing more origin requests than x-lakecache-max-origin-requests or "
       "cache_only allowed."), 8)
    L.add(timeseries("Lance cache hit ratio", targets(
        (ratio(srate("searchnode_lance_cache_hits_total", SI, by="cache"),
               f"({srate('searchnode_lance_cache_hits_total', SI, by='cache')} + "
               f"{srate('searchnode_lance_cache_misses_total', SI, by='cache')})"), "{{cache}}"),
    ), "percentunit", "Lookups lance's decoded-structure caches answered (index: centroids, codebooks, graphs, "
       "postings; metadata: manifests, footers).", min_=0, max_=1), 8)
    L.add(timeseries("Lance caches held", targets(
        (f"sum by (cache) (searchnode_lance_cache_bytes{{{SI}}})", "{{cache}}"),
    ), "bytes", "Bytes lance's caches hold ([cache] index_cache, metadata_cache).", min_=0), 8)

    L.row("Lance object store")
    L.add(timeseries("Object-store requests by op", targets(
        (srate("searchnode_objectstore_requests_total", SI, by="op, outcome"), "{{op}} {{outcome}}"),
    ), "reqps", "What Lance asked for, before the page cache."), 8)
    L.add(timeseries("Object-store read bytes", targets(
        (srate("searchnode_objectstore_read_bytes_total", SI), "read"),
    ), "Bps", "Bytes Lance read."), 8)
    L.add(timeseries("Object-store latency p99 by op", targets(
        (hq(0.99, "searchnode_objectstore_request_duration_milliseconds", SI, by="op"), "{{op}}"),
    ), "ms"), 8)

    return dashboard("lakecache-search", "lakecache / Search",
                     "Search nodes serving Lance tables through the fleet: queries, HTTP, SQL, catalog, page cache.",
                     L, [
                         query_var("instance", "Search node", f'label_values(up{{job="{JOB_SEARCH}"}}, instance)'),
                         query_var("table", "Table", "label_values(searchnode_query_requests_total, table)"),
                     ])


# ---------------------------------------------------------------------------------------------

DASHBOARDS = {
    "fleet.json": fleet,
    "cache-node.json": cache_node,
    "router.json": router,
    "search.json": search,
}


def render(build) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUT_DIR / name).write_text(render(build), encoding="utf-8")
        print(f"wrote {(OUT_DIR / name).relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
