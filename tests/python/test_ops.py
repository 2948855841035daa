"""ops/: every Kubernetes manifest parses and hangs together (selectors, ports, probes,
config mounts), every config it embeds passes the binaries' own --check-config, and the
systemd units start the binaries with configs that check."""

import configparser
import re
import subprocess
from pathlib import Path

import yaml

from conftest import _binary

OPS = Path(__file__).resolve().parents[2] / "ops"
BINARIES = {
    "cache-node": _binary("LAKECACHE_CACHE_NODE_BIN", "cache-node"),
    "router": _binary("LAKECACHE_ROUTER_BIN", "router"),
    "search-node": _binary("LAKECACHE_SEARCH_NODE_BIN", "search-node"),
}


def manifests():
    docs = []
    for f in sorted(p for p in (OPS / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"):
        for d in yaml.safe_load_all(f.read_text()):
            if d is not None:
                docs.append((f.name, d))
    return docs


def check_config(binary, text, tmp_path, name):
    p = tmp_path / name
    p.write_text(text)
    r = subprocess.run([BINARIES[binary], "--config", str(p), "--check-config"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{binary} refuses {name}:\n{r.stderr}"
    # The checked config is printed with its secrets redacted.
    secret = re.compile(r'^\s*(secret|secret_key|secret_access_key|token|admin_token|node_admin_token)\s*=\s*"([^"]+)"')
    for line in text.splitlines():
        m = secret.match(line)
        if m:
            assert f'"{m.group(2)}"' not in r.stdout, f"{binary} printed {m.group(1)} of {name}"
            assert "<redacted>" in r.stdout


def test_every_manifest_parses_and_hangs_together():
    docs = manifests()
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    assert {("StatefulSet", "cache-node"), ("Deployment", "router"), ("Deployment", "search-node"),
            ("Service", "cache-node"), ("Service", "router"), ("Service", "search-node"),
            ("Secret", "lakecache-config"), ("ServiceMonitor", "lakecache"), ("Namespace", "lakecache")} <= kinds
    for f, d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), f
        if d["kind"] != "Namespace" and d["kind"] != "Kustomization":
            assert d["metadata"].get("namespace") == "lakecache", f"{f}: {d['kind']} {d['metadata']['name']}"
    workloads = {d["metadata"]["name"]: d for _, d in docs if d["kind"] in ("StatefulSet", "Deployment")}
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    secret = next(d for _, d in docs if d["kind"] == "Secret")
    for name, w in workloads.items():
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        svc = services[name]
        assert svc["spec"]["selector"].items() <= labels.items(), f"service {name} selects its pods"
        (c,) = w["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{name}: service port {p} targets a container port"
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] in ("/readyz", "/healthz"), name
            assert c[probe]["httpGet"]["port"] in ports, name
        # The config the container is started with is mounted from the Secret.
        cfg = c["args"][c["args"].index("--config") + 1]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        vol = next(n for n, path in mounts.items() if cfg.startswith(path + "/"))
        item = vols[vol]["secret"]["items"][0]
        assert mounts[vol] + "/" + item["path"] == cfg
        assert item["key"] in secret["stringData"], f"{name}: {item['key']} is in the Secret"
        assert c["command"] == [name]
        # The port the config listens on is the container port.
        listen = [ln for ln in secret["stringData"][item["key"]].splitlines() if ln.strip().startswith("listen")][0]
        assert int(listen.split(":")[-1].strip('" ')) in ports.values(), name
    sts = workloads["cache-node"]
    assert sts["spec"]["serviceName"] == "cache-node" and services["cache-node"]["spec"]["clusterIP"] == "None"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {
        m["name"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    kust = yaml.safe_load((OPS / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(f.name for f in (OPS / "k8s").glob("*.yaml") if f.name != "kustomization.yaml")


def test_every_embedded_config_loads(tmp_path):
    secret = next(d for _, d in manifests() if d["kind"] == "Secret")
    assert set(secret["stringData"]) == {"cache-node.toml", "router.toml", "search-node.toml"}
    for key, text in secret["stringData"].items():
        check_config(key.removesuffix(".toml"), text, tmp_path, key)
    # The router and the search node address exactly the StatefulSet's pods.
    sts = next(d for _, d in manifests() if d["kind"] == "StatefulSet")
    pods = {f"http://cache-node-{i}.cache-node.lakecache.svc.cluster.local:9000" for i in range(sts["spec"]["replicas"])}
    for key in ("router.toml", "search-node.toml"):
        urls = {ln.split("=", 1)[1].strip().strip('"') for ln in secret["stringData"][key].splitlines()
                if ln.strip().startswith("url")}
        assert urls == pods, key


def test_systemd_units_start_the_binaries_with_checked_configs(tmp_path):
    repo_configs = OPS.parent / "config"
    for unit in sorted((OPS / "systemd").glob("*.service")):
        p = configparser.ConfigParser(strict=False, interpolation=None)
        p.optionxform = str
        p.read(unit)
        assert {"Unit", "Service", "Install"} <= set(p.sections()), unit.name
        exec_start = p["Service"]["ExecStart"].split()
        binary = Path(exec_start[0]).name
        assert binary in BINARIES, unit.name
        assert exec_start[exec_start.index("--config") + 1] == f"/etc/lakecache/{binary}.toml"
        assert "--check-config" in p["Service"]["ExecStartPre"]
        # The repository's config is what gets installed there; it must check.
        check_config(binary, (repo_configs / f"{binary}.toml").read_text(), tmp_path, f"{binary}.toml")
