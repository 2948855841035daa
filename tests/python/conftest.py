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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CacheNode:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.origin = tmp / "origin"
        (self.origin / BUCKET).mkdir(parents=True)
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
[cache]
page_size = "64 KiB"
memory_capacity = "64 MiB"
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
        binary = os.environ.get("LAKECACHE_CACHE_NODE_BIN")
        if not binary:
            target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/lakecache/target"))
            binary = f"{target}/debug/cache-node"
        self.log = open(tmp / "cache-node.log", "wb")
        self.proc = subprocess.Popen([binary, "--config", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"cache node did not start; log:\n{(tmp / 'cache-node.log').read_text()}")
            time.sleep(0.1)

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
