"""Every example in README.md's "Using it" section runs as written: the stack the start
command brings up (two cache nodes on :9001/:9002 and the router on :9000 from
config/cache-node.toml and config/router.toml, the search node on :9100 (Flight SQL on :9101) from
config/search-node.toml, over the generated sample table), then each ```sh block run by
bash — with curl failing on any HTTP error status — and each ```python block run by
python3. A README example that answers an error fails this test."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import _binary, _wait_healthy

ROOT = Path(__file__).resolve().parents[2]
PORTS = [9000, 9001, 9002, 9100, 9101]


def _free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    using = text[text.index("## Using it"):]
    using = using[:using.index("\n## ", 1)]
    return re.findall(rf"```{lang}\n(.*?)```", using, re.S)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    busy = [p for p in PORTS if not _free(p)]
    if busy:
        pytest.fail(f"the README's ports {busy} are taken; stop what listens there (e.g. scripts/start.sh)")
    tmp = tmp_path_factory.mktemp("readme")
    table = tmp / ".lakecache/origin/lakecache-sample/images.lance"
    table.parent.mkdir(parents=True)
    subprocess.run([sys.executable, str(ROOT / "scripts/gen_sample.py"), str(table)], check=True, cwd=tmp)
    procs = []
    logs = []

    def start(args, url, name):
        log = open(tmp / f"{name}.log", "wb")
        logs.append(log)
        p = subprocess.Popen(args, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        _wait_healthy(url, p, tmp / f"{name}.log")

    node = _binary("LAKECACHE_CACHE_NODE_BIN", "cache-node")
    for i in (1, 2):
        start([node, "--config", str(ROOT / "config/cache-node.toml"), "--listen", f"127.0.0.1:900{i}",
               "--state-dir", f".lakecache/node-{i}", "--disk-capacity", "2 GiB"],
              f"http://127.0.0.1:900{i}", f"node-{i}")
    start([_binary("LAKECACHE_ROUTER_BIN", "router"), "--config", str(ROOT / "config/router.toml")],
          "http://127.0.0.1:9000", "router")
    start([_binary("LAKECACHE_SEARCH_NODE_BIN", "search-node"), "--config", str(ROOT / "config/search-node.toml")],
          "http://127.0.0.1:9100", "search-node")
    yield tmp
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
    for log in logs:
        log.close()
    # The page files are preallocated (2 GiB each, the pin budget needs it): gone with the test.
    for i in (1, 2):
        shutil.rmtree(tmp / f".lakecache/node-{i}", ignore_errors=True)


def test_the_readme_has_examples_to_run():
    assert len(_blocks("sh")) >= 3 and len(_blocks("python")) >= 2


@pytest.mark.parametrize("i", range(len(_blocks("sh"))))
def test_shell_example_runs_as_written(stack, i):
    block = _blocks("sh")[i]
    script = "set -eo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n" + block
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    r = subprocess.run(["bash", "-c", script], cwd=stack, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"README sh block {i} failed ({r.returncode}):\n{block}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"


@pytest.mark.parametrize("i", range(len(_blocks("python"))))
def test_python_example_runs_as_written(stack, i):
    block = _blocks("python")[i]
    r = subprocess.run([sys.executable, "-c", block], cwd=stack, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"README python block {i} failed:\n{block}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
