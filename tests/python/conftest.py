"""Fixtures: a real cache node (the binary built by scripts/test.sh) in front of a local
directory origin, on a free loopback port, with its own temporary state."""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ACCESS_KEY = "lakecache-py"
SECRET_KEY = "lakecache-py-secret"
BUCKET = "pybucket"
ROUTER_TOKEN = "python-router-token"
FLEET_SECRET = "python-fleet-secret"
# The [fleet] section of the router's and the search node's configs: ring, node key, checks.
FLEET_TOML = f"""[fleet]
page_size = "64 KiB"
secret = "{FLEET_SECRET}"
node_admin_token = "python-admin-token"
health_interval = "200ms"
[fleet.node_key]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(env_var: str, name: str) -> str:
    b = os.environ.get(env_var)
    if b:
        return b
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/lakecache/target"))
    return f"{target}/debug/{name}"


def _wait_healthy(url: str, proc, log: Path, path: str = "/healthz", timeout: float = 30):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{url} did not start; log:\n{log.read_text()}")
        time.sleep(0.1)


class CacheNode:
    def __init__(self, tmp: Path, origin: Path | None = None, memory: str = "64 MiB"):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.origin = origin or tmp / "origin"
        (self.origin / BUCKET).mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = tmp / "cache-node.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
[[auth.keys]]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
[admin]
token = "python-admin-token"
[fleet]
secret = "{FLEET_SECRET}"
[cache]
page_size = "64 KiB"
memory_capacity = "{memory}"
multipart_dir = "{tmp}/multipart"
[disk]
path = "{tmp}/pages.bin"
capacity = "256 MiB"
[pins]
budget = "64 MiB"
state_file = "{tmp}/pins.json"
[[origins]]
bucket = "*"
kind = "local"
root = "{self.origin}"
"""
        )
        self.cfg = cfg
        self.start()

    def start(self):
        """Starts the node process (again, after `kill9`: same port, same state)."""
        self.log = open(self.tmp / "cache-node.log", "ab")
        self.proc = subprocess.Popen([_binary("LAKECACHE_CACHE_NODE_BIN", "cache-node"), "--config", str(self.cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.proc, self.tmp / "cache-node.log")

    def kill9(self):
        self.proc.kill()  # SIGKILL: no shutdown, no flush
        self.proc.wait(timeout=15)
        self.log.close()

    def env(self) -> dict:
        e = dict(os.environ)
        e.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        return e

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Fleet:
    """Cache nodes (two by default) over one local origin, and the router in front of them."""

    def __init__(self, tmp: Path, nodes: int = 2, memory: str = "64 MiB"):
        self.origin = tmp / "origin"
        self.nodes = [CacheNode(tmp / f"node{i}", origin=self.origin, memory=memory) for i in range(nodes)]
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "router.toml"
        self.write_config(self.nodes)
        self.log = open(tmp / "router.log", "wb")
        self.proc = subprocess.Popen([_binary("LAKECACHE_ROUTER_BIN", "router"), "--config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.proc, tmp / "router.log")

    def write_config(self, members):
        nodes = "".join(f'[[nodes]]\nid = "cache-{self.nodes.index(n)}"\nurl = "{n.url}"\n' for n in members)
        self.config.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
[[auth.keys]]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
[admin]
token = "{ROUTER_TOKEN}"
{FLEET_TOML}{nodes}"""
        )

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.log.close()
        for n in self.nodes:
            if n.proc.poll() is None:
                n.stop()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    f = Fleet(base)
    yield f
    f.stop()


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    n = CacheNode(tmp_path_factory.mktemp("cachenode"))
    yield n
    n.stop()


@pytest.fixture(scope="session")
def s3(node):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=node.url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


SEARCH_KEY = "python-search-key"


class SearchNode:
    """A search node reading tables of `s3://pybucket/tables` through the given cache
    nodes (the in-process ring client)."""

    def __init__(self, tmp: Path, nodes):
        # Flight SQL at the REST port + 1, where the lancedb client looks for it.
        while True:
            self.port = _free_port()
            self.flight_port = self.port + 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", self.flight_port))
                    break
                except OSError:
                    continue
        self.url = f"http://127.0.0.1:{self.port}"
        members = "".join(f'[[nodes]]\nid = "cache-{i}"\nurl = "{n.url}"\n' for i, n in enumerate(nodes))
        cfg = tmp / "search-node.toml"
        cfg.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
flight_listen = "127.0.0.1:{self.flight_port}"
read_consistency_interval = "1s"
[auth]
api_keys = ["{SEARCH_KEY}"]
[[namespaces]]
name = ""
uri = "s3://{BUCKET}/tables"
[[namespaces]]
name = "media"
uri = "s3://{BUCKET}/media"
{FLEET_TOML}{members}"""
        )
        self.log = open(tmp / "search-node.log", "wb")
        self.proc = subprocess.Popen([_binary("LAKECACHE_SEARCH_NODE_BIN", "search-node"), "--config", str(cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.proc, tmp / "search-node.log")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    base = tmp_path_factory.mktemp("search")
    f = Fleet(base)
    s = SearchNode(base, f.nodes)
    s.fleet = f
    yield s
    s.stop()
    f.stop()
