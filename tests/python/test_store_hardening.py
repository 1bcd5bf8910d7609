"""The rendezvous store against strangers: binding, connection cap, memory under half-sent and idle
connections, request timeout, size limits, delete, and (with a job key) authentication.

The server runs in its own process (its RSS is read from /proc/<pid>/status); attackers are raw
sockets speaking the store protocol (store_tcp.cc, version 3) or random bytes.
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

HELLO = b"RPSTORE3" + bytes(40)  # protocol v3, no key (auth = 0)
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
        assert answer[:8] == b"RPSTORE3" and answer[8] == 0, answer[:16]
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
    MiB here); now the server's RSS grows by a few MiB and a real client is served meanwhile.
    (max_pending is raised so that all 200 silent ones are kept.)"""
    srv = server_factory(max_pending=256)
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


def test_rendezvous_records_are_exactly_what_a_rendezvous_writes():
    """The names _forget_rendezvous deletes come from the core (rendezvous_records); a store that
    records every key two real ranks write during rendezvous checks that list against what
    rendezvous.cc actually writes, so the two cannot drift apart."""
    body = """
port = int(os.environ["MASTER_PORT"])
if rank == 0:
    srv = rp._core.TCPStoreServer("127.0.0.1", port, key="")
base = rp._core.TCPStore("127.0.0.1", port, 20_000, key="")

class Recording:
    def __init__(self, b):
        self.b, self.keys = b, []
    def set(self, k, v):
        self.keys.append(k)
        self.b.set(k, v)
    def get(self, k, t):
        return self.b.get(k, t)
    def add(self, k, d):
        self.keys.append(k)
        return self.b.add(k, d)

rec = Recording(base)
comm = rp.Communicator.from_store(rec, rank, size, prefix="job", transport="tcp", timeout=20)
named = rp._core.rendezvous_records(rank)
rp.comm._forget_rendezvous(base, "job", rank)
comm.barrier()
left = []
for k in rec.keys:
    try:
        base.get(k, 0)
        left.append(k)
    except rp.TimeoutError:
        pass
emit({"written": sorted(set(rec.keys)), "named": sorted("job/" + n for n in named), "left": left})
comm.barrier()
comm.close()
"""
    procs, path, _ = start_ranks(
        2, body, env={"RP_TEST_NO_COMM": "1", "RINGPRESS_JOB_KEY": "", "RINGPRESS_JOB_KEY_FILE": ""}
    )
    for r in collect(procs, path, timeout=120):
        assert r.returncode == 0, r.stderr[-2000:]
        (rec,) = r.records
        assert rec["written"] == rec["named"], rec
        assert rec["left"] == [], rec
    assert rec["named"] == ["job/addr/1"]


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
    assert answer[:8] == b"RPSTORE3" and answer[8] == 1 and answer[16:] == bytes(64)
    try:
        s.sendall(b"\x02" + (10).to_bytes(4, "little") + b"secret-ish" + (8).to_bytes(8, "little"))
        s.sendall(bytes(8))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_by_peer(s, 10)
    # A raw client that claims a key but sends a made-up proof: dropped, its GET unanswered.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"RPSTORE3\x01" + bytes(7) + os.urandom(32))
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
        rp.TCPStore("127.0.0.1", relay.getsockname()[1], 1_000, key=KEY)
    except rp.RingpressError:
        pass  # the relay hangs up before the server's confirmation
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


# ------------------------------------------------------------------------------------ records


class RecordRelay:
    """One connection relayed between a store client and server, record by record (protocol v3:
    after the 80-byte handshake prefix of either direction, u32 length + ciphertext + 16-byte
    tag). `up(i, record)` / `down(i, record)` return the bytes to forward for the i-th record of
    the client-to-server / server-to-client stream; every byte relayed is kept in .seen."""

    def __init__(self, port: int, up=None, down=None):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.seen = bytearray()
        self.hooks = (up or (lambda i, r: r), down or (lambda i, r: r))
        self.target = port
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        c, _ = self.lsock.accept()
        s = socket.create_connection(("127.0.0.1", self.target), timeout=30)
        c.settimeout(30)
        # Handshake pieces: the client's hello, then its proof; the server's hello (with proof).
        up = (c, s, self.hooks[0], (48, 32))
        threading.Thread(target=self._pump, args=up, daemon=True).start()
        threading.Thread(target=self._pump, args=(s, c, self.hooks[1], (80,)), daemon=True).start()

    def _pump(self, src, dst, hook, pieces):
        try:
            for n in pieces:
                dst.sendall(recv_n(src, n))
            i = 0
            while True:
                head = recv_n(src, 4)
                if len(head) < 4:
                    break
                record = head + recv_n(src, int.from_bytes(head, "little") + 16)
                self.seen += record
                dst.sendall(hook(i, record))
                i += 1
        except OSError:
            pass
        for sock in (dst, src):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()


def flip(record: bytes) -> bytes:
    b = bytearray(record)
    b[4 + 2] ^= 0x01  # a bit of the ciphertext
    return bytes(b)


def keyed_works(port: int, tag: str) -> None:
    c = rp.TCPStore("127.0.0.1", port, 10_000, key=KEY)
    c.set(tag, b"v-" + tag.encode())
    assert c.get(tag, 1000) == b"v-" + tag.encode()


def test_a_request_altered_on_the_way_is_refused(server_factory):
    srv = server_factory(key=KEY)
    relay = RecordRelay(srv.port, up=lambda i, r: flip(r) if i == 1 else r)
    c = rp.TCPStore("127.0.0.1", relay.port, 10_000, key=KEY)
    c.set("first", b"1")  # record 0 passes
    with pytest.raises(rp.TransportError, match="refused SET of key 'second'") as e:
        c.set("second", b"2")
    assert "request record 1 failed authentication" in str(e.value)
    with pytest.raises(rp.TransportError, match="unusable after an earlier failure"):
        c.get("first", 0)  # sticky: the server closed the connection
    direct = rp.TCPStore("127.0.0.1", srv.port, 10_000, key=KEY)
    with pytest.raises(rp.TimeoutError):
        direct.get("second", 0)  # the altered request was not executed
    assert direct.get("first", 0) == b"1"
    assert "request record 1 failed authentication" in srv.log(), srv.log()
    keyed_works(srv.port, "after-flip")  # the server is up for honest clients
    relay.close()


def test_a_reply_altered_on_the_way_is_refused(server_factory):
    srv = server_factory(key=KEY)
    # Server records: 0 confirms the handshake, 1 answers the SET, 2 the GET.
    relay = RecordRelay(srv.port, down=lambda i, r: flip(r) if i == 2 else r)
    c = rp.TCPStore("127.0.0.1", relay.port, 10_000, key=KEY)
    c.set("k", b"value")
    with pytest.raises(rp.TransportError, match=r"reply record 2 .* to GET of key 'k' failed auth"):
        c.get("k", 1000)
    keyed_works(srv.port, "after-reply-flip")
    relay.close()


def test_a_replayed_request_is_refused_and_not_executed(server_factory):
    """The relay sends the first request (an add) again in place of the second: without
    per-record numbers the server would add twice. The traffic carries no key or value in clear."""
    srv = server_factory(key=KEY)
    first = []

    def up(i, record):
        if i == 0:
            first.append(record)
            return record
        return first[0] if i == 1 else record

    relay = RecordRelay(srv.port, up=up)
    c = rp.TCPStore("127.0.0.1", relay.port, 10_000, key=KEY)
    assert c.add("counter-plaintext-marker", 1) == 1
    with pytest.raises(rp.TransportError, match="refused GET of key 'counter-plaintext-marker'"):
        c.get("counter-plaintext-marker", 0)
    direct = rp.TCPStore("127.0.0.1", srv.port, 10_000, key=KEY)
    assert direct.get("counter-plaintext-marker", 0) == b"1"  # added once
    assert b"plaintext-marker" not in relay.seen and len(relay.seen) > 0
    assert "request record 1 failed authentication" in srv.log(), srv.log()
    keyed_works(srv.port, "after-replay")
    relay.close()


# ------------------------------------------------------------------------------------ handshakes

HONEST = r"""
import sys, time
import ringpress as rp
port, i, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t0 = time.monotonic()
c = rp.TCPStore("127.0.0.1", port, 20_000, key=key)
c.set("honest-%d" % i, b"x")
print(c.add("joined", 1), round(time.monotonic() - t0, 3), flush=True)
"""


def test_silent_strangers_are_closed_after_the_handshake_timeout(server_factory):
    """handshake_timeout (not request_timeout) bounds a connection's handshake from its accept,
    also after the server sent its hello."""
    srv = server_factory(key=KEY, handshake_timeout=0.5)  # request_timeout stays 30 s
    t0 = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    stalled = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    stalled.sendall(b"RPSTORE3\x01" + bytes(7) + os.urandom(32))  # claims a key ...
    assert len(recv_n(stalled, 80)) == 80  # ... gets the server's hello, never proves anything
    assert closed_by_peer(silent, 10) and closed_by_peer(stalled, 10)
    took = time.monotonic() - t0
    assert 0.3 <= took < 10, took
    assert srv.log().count("did not finish handshake within 500 ms") == 2, srv.log()
    keyed_works(srv.port, "after-silent")


def test_honest_clients_connect_while_strangers_fill_the_pending_slots(server_factory):
    """Silent strangers hold every pending slot (and reconnect when closed) and would hold them
    for 60 s; honest clients in their own processes still connect, because a new connection
    closes the one that has waited longest in its handshake."""
    srv = server_factory(key=KEY, max_pending=4, handshake_timeout=60.0, request_timeout=60.0)
    stop = threading.Event()
    strangers = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(4)]
    wait_until(lambda: srv.stats()["conns"] == 4, 10, "the strangers to be accepted")

    def refill():
        while not stop.wait(0.1):
            for j, s in enumerate(strangers):
                s.setblocking(False)
                try:
                    gone = s.recv(1) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    s.close()
                    strangers[j] = socket.create_connection(("127.0.0.1", srv.port), timeout=10)

    t = threading.Thread(target=refill, daemon=True)
    t.start()
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", HONEST, str(srv.port), str(i), KEY],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        stop.set()
        t.join(5)
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert sorted(int(o.split()[0]) for o, _ in outs) == [1, 2, 3]
    assert "handshake not finished" in srv.log(), srv.log()
    # The strangers still hold the pending slots: nothing timed them out.
    assert "did not finish handshake" not in srv.log()
    for s in strangers:
        s.close()
