"""The rendezvous store against strangers: binding, connection cap, memory under half-sent and idle
connections, request timeout, size limits, delete, and (with a job key) authentication.

The server runs in its own process (its RSS is read from /proc/<pid>/status); attackers are raw
sockets speaking the store protocol (store_tcp.cc, version 2) or random bytes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import ringpress as rp
from ranks import collect, start_ranks

SERVER = r"""
import json, sys
import ringpress as rp
kw = json.loads(sys.argv[1])
host = kw.pop("host")
s = rp.TCPStoreServer(host, 0, **kw)
print(s.port, flush=True)
for line in sys.stdin:
    if line.strip() == "stats":
        print(json.dumps({"held": s.held_bytes, "conns": s.connections}), flush=True)
"""

HELLO = b"RPSTORE2" + bytes(40)  # protocol v2, no key (auth = 0)
MiB = 1 << 20


class Server:
    """A TCPStoreServer in a child process; stderr goes to a file (its log lines)."""

    def __init__(self, tmp_path, host: str = "127.0.0.1", **kw):
        self.log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        kw["host"] = host
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(kw)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r} {self.log()}"
        self.port = int(line)

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def server_factory(tmp_path):
    made = []

    def make(**kw):
        s = Server(tmp_path, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def wait_until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def raw(port: int, host: str = "127.0.0.1", handshake: bool = True) -> socket.socket:
    s = socket.create_connection((host, port), timeout=10)
    if handshake:
        s.sendall(HELLO)
        answer = recv_n(s, 80)
        assert answer[:8] == b"RPSTORE2" and answer[8] == 0, answer[:16]
    return s


def recv_n(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            break
        out += b
    return out


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """True when the server closes s within timeout (EOF or reset)."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def set_header(key: bytes, claimed: int) -> bytes:
    return b"\x01" + len(key).to_bytes(4, "little") + key + claimed.to_bytes(8, "little")


def works(port: int, host: str = "127.0.0.1", tag: str = "probe") -> None:
    c = rp.TCPStore(host, port, 10_000)
    c.set(tag, b"v-" + tag.encode())
    assert c.get(tag, 1000) == b"v-" + tag.encode()
    assert c.add(tag + "-n", 2) == 2


# ------------------------------------------------------------------------------------ memory


def test_idle_and_half_sent_connections_keep_rss_bounded(server_factory):
    """200 connections that never handshake, 100 handshaken idle ones and 200 that send a SET
    header claiming 64 MiB (plus 1000 bytes of it): the old server grew ~2.5 MiB per claim (500
    MiB here); now the server's RSS grows by a few MiB and a real client is served meanwhile."""
    srv = server_factory()
    works(srv.port, tag="warm")
    base = srv.rss()
    socks = [raw(srv.port, handshake=False) for _ in range(200)]
    socks += [raw(srv.port) for _ in range(100)]
    claims = []
    for i in range(200):
        s = raw(srv.port)
        s.sendall(set_header(b"claim%d" % i, 64 * MiB) + bytes(1000))
        claims.append(s)
    # Every claim's first bytes are in (booked as they arrive: about 4 KiB each).
    wait_until(
        lambda: srv.stats()["held"] >= 200 * 1000 and srv.stats()["conns"] >= 500,
        30,
        "the server to read every connection",
    )
    grown = srv.rss() - base
    assert grown < 48 * MiB, f"RSS grew by {grown / MiB:.1f} MiB for 500 hostile connections"
    works(srv.port, tag="during")
    held = srv.stats()["held"]
    assert held < 200 * 8192 + MiB, held
    for s in socks + claims:
        s.close()
    wait_until(lambda: srv.stats()["conns"] == 0, 30, "the connections to be released")
    assert srv.stats()["held"] < 4096, srv.stats()  # only the probes' keys remain


def test_stored_values_count_against_the_total_and_delete_returns_memory(server_factory):
    """max_total_bytes bounds stored data: the SET beyond it gets a UsageError and the same client
    keeps working; delete_key gives the room (and the memory) back."""
    srv = server_factory(max_total_bytes=48 * MiB, max_value_bytes=16 * MiB)
    c = rp.TCPStore("127.0.0.1", srv.port, 10_000)
    base = srv.rss()
    big = os.urandom(MiB) * 8  # 8 MiB
    for i in range(5):
        c.set(f"v{i}", big)
    with pytest.raises(rp.UsageError, match="store full"):
        c.set("v5", big)
    with pytest.raises(rp.UsageError, match="at most 16777216"):
        c.set("huge", bytes(17 * MiB))
    assert c.get("v0", 1000) == big  # the connection is usable after both refusals
    with pytest.raises(rp.TimeoutError):
        c.get("v5", 0)
    assert srv.stats()["held"] <= 48 * MiB
    peak = srv.rss()
    assert peak - base > 30 * MiB  # the values really are held (the test measures something)
    for i in range(5):
        assert c.delete_key(f"v{i}") is True
    assert c.delete_key("v0") is False
    c.set("v5", big)  # room again
    assert c.delete_key("v5")
    wait_until(lambda: srv.stats()["held"] < 4096, 10, "held bytes to drop")
    # Memory is handed back to the system, not kept by the allocator.
    wait_until(lambda: srv.rss() < base + 16 * MiB, 10, f"RSS to drop (peak {peak >> 20} MiB)")


# ------------------------------------------------------------------------------------ limits


def test_connections_beyond_the_cap_are_closed_at_accept(server_factory):
    srv = server_factory(max_connections=8)
    held = [raw(srv.port) for _ in range(8)]
    extra = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    assert closed_by_peer(extra, 10), "a connection over the cap was kept open"
    assert srv.stats()["conns"] == 8
    for s in held[:2]:
        assert not closed_by_peer(s, 0.05), "a connection within the cap was closed"
    held.pop().close()
    works(srv.port)  # a slot is free again (the client retries a refused handshake)
    assert "refusing connection" in srv.log() and "(limit 8)" in srv.log(), srv.log()
    for s in held:
        s.close()


def test_half_sent_requests_are_dropped_after_the_timeout(server_factory):
    srv = server_factory(request_timeout=1.0)
    half = raw(srv.port)
    half.sendall(set_header(b"k", 100)[:7])  # a SET header cut short
    never = raw(srv.port, handshake=False)  # connected, no handshake
    idle = raw(srv.port)  # handshaken, between requests: legitimate, kept
    t0 = time.monotonic()
    assert closed_by_peer(half, 15), "a half-sent request was kept past the timeout"
    assert time.monotonic() - t0 >= 0.5  # not before its time
    assert closed_by_peer(never, 15), "a connection that never handshook was kept"
    assert not closed_by_peer(idle, 0.5), "an idle connection between requests was dropped"
    # The idle raw connection still works: GET of a missing key with timeout 0 -> TIMEOUT.
    idle.sendall(b"\x02" + (1).to_bytes(4, "little") + b"x" + (8).to_bytes(8, "little") + bytes(8))
    assert recv_n(idle, 9) == b"\x02" + bytes(8)
    log = srv.log()
    assert "did not finish sending its request within 1000 ms" in log, log
    assert "did not finish handshake within 1000 ms" in log, log
    works(srv.port)


def test_random_bytes_are_refused(server_factory):
    srv = server_factory()
    for seed in range(8):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        junk = os.urandom(4096)
        if junk[:1] == b"R":
            junk = b"X" + junk[1:]
        try:
            s.sendall(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_peer(s, 10), f"random bytes kept the connection open (seed {seed})"
        s.close()
    # After a good handshake too: an unknown command closes the connection.
    s = raw(srv.port)
    s.sendall(b"\x7f" + os.urandom(64))
    assert closed_by_peer(s, 10)
    assert "bad handshake" in srv.log() and "unknown command 127" in srv.log()
    works(srv.port)


def test_delete_key_on_every_store():
    srv = rp.TCPStoreServer("127.0.0.1", 0)
    c = rp.TCPStore("127.0.0.1", srv.port, 10_000)
    for store in (c, rp.HashStore()):
        store.set("k", b"v")
        assert store.delete_key("k") is True
        assert store.delete_key("k") is False
        with pytest.raises(rp.TimeoutError):
            store.get("k", 0)
        store.set("k", b"again")
        assert store.get("k", 0) == b"again"


def test_from_env_removes_its_rendezvous_records():
    """After from_env the store keeps none of the rendezvous records (addresses, secret)."""
    body = """
port = int(os.environ["MASTER_PORT"])
c = rp.TCPStore("127.0.0.1", port, 10_000)
comm.barrier()
left = []
for key in ["addr/0", "addr/1", "secret"]:
    try:
        c.get("ringpress/env/0/0/" + key, 0)
        left.append(key)
    except rp.TimeoutError:
        pass
x = np.ones(4, np.float32); comm.allreduce(x)
emit({"left": left, "sum": float(x[0])})
comm.close()
"""
    procs, path, _ = start_ranks(2, body)
    for r in collect(procs, path, timeout=120):
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.records == [{"left": [], "sum": 2.0}]


# ------------------------------------------------------------------------------------ binding


def _other_local_ipv4() -> str | None:
    """A non-loopback IPv4 address of this machine, or None."""
    candidates = set()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent
            candidates.add(s.getsockname()[0])
    except OSError:
        pass
    try:
        candidates.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    for ip in sorted(candidates):
        if ip.startswith("127.") or ip == "0.0.0.0":
            continue
        try:  # it must really be ours: bindable
            with socket.socket() as s:
                s.bind((ip, 0))
            return ip
        except OSError:
            continue
    return None


def _refused(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=5).close()
        return False
    except (ConnectionRefusedError, TimeoutError, OSError):
        return True


def test_server_listens_only_on_the_given_address():
    ip = _other_local_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    local = rp.TCPStoreServer("127.0.0.1", 0)
    assert _refused(ip, local.port), f"a server bound to 127.0.0.1 answered on {ip}"
    works(local.port)
    # Control: the address is reachable when asked for explicitly, and a server bound to it is not
    # reachable through loopback.
    wild = rp.TCPStoreServer("0.0.0.0", 0)
    works(wild.port, host=ip, tag="wild")
    there = rp.TCPStoreServer(ip, 0)
    works(there.port, host=ip, tag="there")
    assert _refused("127.0.0.1", there.port)


def test_from_env_store_binds_to_master_addr():
    ip = _other_local_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    body = f"""
port = int(os.environ["MASTER_PORT"])
import socket
try:
    socket.create_connection(("{ip}", port), timeout=5).close()
    reachable = True
except OSError:
    reachable = False
x = np.ones(4, np.float32); comm.allreduce(x)
emit({{"reachable": reachable, "sum": float(x[0])}})
comm.close()
"""
    procs, path, _ = start_ranks(2, body)  # MASTER_ADDR=127.0.0.1
    for r in collect(procs, path, timeout=120):
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.records == [{"reachable": False, "sum": 2.0}]


# ------------------------------------------------------------------------------------ job key

KEY = "k" * 16 + "0123456789abcdef0123456789abcdef"  # 48 characters of key material
WRONG = "w" * 48


def test_right_key_works_missing_or_wrong_key_is_refused(server_factory):
    srv = server_factory(key=KEY)
    good = rp.TCPStore("127.0.0.1", srv.port, 10_000, key=KEY)
    good.set("secret-ish", b"value")
    assert good.get("secret-ish", 1000) == b"value"
    with pytest.raises(rp.TransportError, match="requires the job key"):
        rp.TCPStore("127.0.0.1", srv.port, 10_000, key="")
    with pytest.raises(rp.TransportError, match="could not prove"):
        rp.TCPStore("127.0.0.1", srv.port, 10_000, key=WRONG)
    # A raw client without a key learns nothing: its GET is never answered.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(HELLO)
    answer = recv_n(s, 80)
    assert answer[:8] == b"RPSTORE2" and answer[8] == 1 and answer[16:] == bytes(64)
    try:
        s.sendall(b"\x02" + (10).to_bytes(4, "little") + b"secret-ish" + (8).to_bytes(8, "little"))
        s.sendall(bytes(8))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_by_peer(s, 10)
    # A raw client that claims a key but sends a made-up proof: dropped, its GET unanswered.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"RPSTORE2\x01" + bytes(7) + os.urandom(32))
    answer = recv_n(s, 80)
    assert answer[8] == 1 and answer[16:48] != bytes(32) and answer[48:] != bytes(32)
    get = b"\x02" + (10).to_bytes(4, "little") + b"secret-ish" + (8).to_bytes(8, "little")
    try:
        s.sendall(os.urandom(32) + get + bytes(8))
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.settimeout(10)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    assert b"value" not in got and got == b"", got
    log = srv.log()
    assert "no job key" in log and "wrong job key" in log, log
    # The key material never crossed the wire in what the server said.
    assert KEY.encode() not in answer
    good.set("still", b"ok")  # the keyed client is unaffected
    assert good.get("still", 1000) == b"ok"


def test_client_with_a_key_refuses_a_server_without_one(server_factory):
    srv = server_factory(key="")
    with pytest.raises(rp.TransportError, match="does not authenticate"):
        rp.TCPStore("127.0.0.1", srv.port, 10_000, key=KEY)
    works(srv.port)  # and a keyless client still works there (the old behaviour)


def test_replayed_handshake_is_refused(server_factory):
    """A client proof recorded on one connection does not open another (fresh server nonce)."""
    srv = server_factory(key=KEY)
    # Record a genuine exchange through a relay that logs what the client sends.
    relay = socket.socket()
    relay.bind(("127.0.0.1", 0))
    relay.listen(1)
    sent = []

    def pump():
        c, _ = relay.accept()
        up = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        hello = recv_n(c, 48)
        up.sendall(hello)
        c.sendall(recv_n(up, 80))
        proof = recv_n(c, 32)
        sent.append(hello + proof)
        up.sendall(proof)
        c.close()
        up.close()

    t = threading.Thread(target=pump)
    t.start()
    try:
        rp.TCPStore("127.0.0.1", relay.getsockname()[1], 10_000, key=KEY)
    except rp.Error:
        pass  # the relay hangs up after the handshake
    t.join(20)
    relay.close()
    assert sent, "the relay saw no handshake"
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(sent[0][:48])
    recv_n(s, 80)
    s.sendall(sent[0][48:])
    assert closed_by_peer(s, 10), "a replayed client proof was accepted"
    assert "wrong job key" in srv.log()


def test_from_env_store_requires_the_job_key():
    """With RINGPRESS_JOB_KEY on every rank, from_env's store admits the ranks and refuses a
    client without the key (or with another)."""
    body = f"""
port = int(os.environ["MASTER_PORT"])
refused = []
for k in ("", {WRONG!r}):
    try:
        rp.TCPStore("127.0.0.1", port, 5_000, key=k)
    except rp.TransportError:
        refused.append(len(k))
mine = rp.TCPStore("127.0.0.1", port, 5_000)  # the configured key
mine.set("from-rank-%d" % rank, b"x")
x = np.ones(4, np.float32); comm.allreduce(x)
emit({{"refused": refused, "sum": float(x[0])}})
comm.close()
"""
    procs, path, _ = start_ranks(2, body, env={"RINGPRESS_JOB_KEY": KEY})
    for r in collect(procs, path, timeout=120):
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.records == [{"refused": [0, len(WRONG)], "sum": 2.0}]
