"""Connection limits and timeouts of every server (cache node, router, search node), with
the real binaries and raw sockets: a request head sent one byte at a time, an idle
keep-alive connection, a body that stalls, and more connections than the listener allows.
Each server runs with short timeouts (1 s) and a small connection limit so the test takes
seconds; the defaults are in README "Limits and timeouts"."""

import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ACCESS_KEY, BUCKET, FLEET_SECRET, FLEET_TOML, SECRET_KEY, _binary, _free_port, _wait_healthy

LIMITS = """header_timeout = "1s"
body_timeout = "1s"
send_timeout = "1s"
max_connections = 16
"""
MAX_CONNECTIONS = 16


class Server:
    def __init__(self, tmp: Path, name: str, binary: str, config: str, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        cfg = tmp / f"{name}.toml"
        cfg.write_text(config)
        self.logpath = tmp / f"{name}.log"
        self.log = open(self.logpath, "wb")
        self.proc = subprocess.Popen([binary, "--config", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.proc, self.logpath)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def cache_node(tmp: Path, origin: Path) -> Server:
    port = _free_port()
    (origin / BUCKET).mkdir(parents=True, exist_ok=True)
    return Server(tmp, "cache-node", _binary("LAKECACHE_CACHE_NODE_BIN", "cache-node"), f"""
[server]
listen = "127.0.0.1:{port}"
{LIMITS}
[[auth.keys]]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
[admin]
token = "python-admin-token"
[fleet]
secret = "{FLEET_SECRET}"
[cache]
page_size = "64 KiB"
multipart_dir = "{tmp}/multipart"
[disk]
enabled = false
[[origins]]
bucket = "*"
kind = "local"
root = "{origin}"
""", port)


def router(tmp: Path, node: Server) -> Server:
    port = _free_port()
    return Server(tmp, "router", _binary("LAKECACHE_ROUTER_BIN", "router"), f"""
[server]
listen = "127.0.0.1:{port}"
{LIMITS}
[[auth.keys]]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
{FLEET_TOML}[[nodes]]
id = "cache-0"
url = "{node.url}"
""", port)


def search_node(tmp: Path, node: Server) -> Server:
    port = _free_port()
    return Server(tmp, "search-node", _binary("LAKECACHE_SEARCH_NODE_BIN", "search-node"), f"""
[server]
listen = "127.0.0.1:{port}"
max_body = "4 KiB"
{LIMITS}
[auth]
api_keys = ["k"]
[[namespaces]]
name = ""
uri = "s3://{BUCKET}/tables"
{FLEET_TOML}[[nodes]]
id = "cache-0"
url = "{node.url}"
""", port)


class Servers:
    """Starts each server on first use (the router and the search node over one cache node)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: dict[str, Server] = {}

    def __getitem__(self, name: str) -> Server:
        if name not in self.started:
            if name == "cache node":
                (self.tmp / "n").mkdir()
                self.started[name] = cache_node(self.tmp / "n", self.tmp / "origin")
            elif name == "router":
                self.started[name] = router(self.tmp, self["cache node"])
            else:
                self.started[name] = search_node(self.tmp, self["cache node"])
        return self.started[name]

    def stop(self):
        for name in ["search node", "router", "cache node"]:
            if name in self.started:
                self.started[name].stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    s = Servers(tmp_path_factory.mktemp("connections"))
    yield s
    s.stop()


NAMES = ["cache node", "router", "search node"]
# A request each server answers with a body it must read first.
BODY_REQUESTS = {
    "cache node": b"PUT /pybucket/stall.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    "router": b"PUT /pybucket/stall.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    "search node": b"POST /v1/table/t/query/ HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nContent-Length: 1000\r\n\r\n",
}


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    return s


def closed_within(s: socket.socket, seconds: float) -> bytes:
    """Reads until the server closes; fails if it is still open after `seconds`."""
    s.settimeout(seconds)
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return got
            got += b
    except ConnectionResetError:
        return got
    except socket.timeout:
        pytest.fail(f"still open after {seconds} s; got {got[:200]!r}")


def healthz(port: int) -> int:
    s = connect(port)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = closed_within(s, 5)
    s.close()
    return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1") else 0


@pytest.mark.parametrize("name", NAMES)
def test_a_head_sent_byte_by_byte_is_cut_and_others_are_served(servers, name):
    srv = servers[name]
    slow = [connect(srv.port) for _ in range(5)]
    t0 = time.time()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    cut = [False] * len(slow)
    i = 0
    while not all(cut) and time.time() - t0 < 6:
        for n, s in enumerate(slow):
            if cut[n]:
                continue
            try:
                s.sendall(head[i % len(head):i % len(head) + 1])
            except OSError:
                cut[n] = True
        # A healthy client is served meanwhile.
        if i == 2:
            assert healthz(srv.port) == 200
        i += 1
        time.sleep(0.25)
    # After the header timeout (1 s) the server closes; a send then fails or a read sees EOF.
    for n, s in enumerate(slow):
        if not cut[n]:
            closed_within(s, 2)
        s.close()
    assert time.time() - t0 < 6, "slow heads were not cut"
    assert srv.proc.poll() is None


@pytest.mark.parametrize("name", NAMES)
def test_an_idle_keep_alive_connection_is_closed(servers, name):
    srv = servers[name]
    s = connect(srv.port)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    t0 = time.time()
    closed_within(s, 4)
    assert time.time() - t0 >= 0.5, "closed at once rather than after the idle timeout"
    s.close()


@pytest.mark.parametrize("name", NAMES)
def test_a_stalled_body_is_cut(servers, name):
    srv = servers[name]
    s = connect(srv.port)
    s.sendall(BODY_REQUESTS[name] + b"x" * 10)
    t0 = time.time()
    answer = closed_within(s, 5)
    took = time.time() - t0
    s.close()
    assert took < 5
    # Either an error answer (4xx) or a closed connection, never a success.
    if answer:
        status = int(answer.split(b" ")[1])
        assert 400 <= status < 500, answer[:300]
        if name == "search node":
            # The search API answers every error as JSON {"message"}.
            body = answer.split(b"\r\n\r\n", 1)[1]
            assert b'"message"' in body, answer[:300]
    assert healthz(srv.port) == 200


def test_the_search_apis_own_refusals_are_json(servers):
    import json
    import urllib.error
    import urllib.request

    srv = servers["search node"]
    req = urllib.request.Request(f"{srv.url}/v1/table/t/insert/", data=b"x" * 10_000, method="POST",
                                 headers={"x-api-key": "k"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 413
    assert e.value.headers["content-type"].startswith("application/json")
    assert json.loads(e.value.read())["message"]


@pytest.mark.parametrize("name", NAMES)
def test_connections_over_the_limit_are_refused_and_the_rest_served(servers, name):
    srv = servers[name]
    held = [connect(srv.port) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.2)
    extra = connect(srv.port)
    refused = closed_within(extra, 3)
    extra.close()
    assert refused.startswith(b"HTTP/1.1 503"), refused
    for s in held:
        s.close()
    time.sleep(0.3)
    assert healthz(srv.port) == 200
