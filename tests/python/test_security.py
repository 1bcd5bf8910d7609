"""Authenticated, encrypted links (issue 16; docs/security.md): real rank processes over TCP, and a
relay in the middle that records every byte, replays what it saw, or flips a bit.

The relay stands where an attacker who rewrote a rank's address in the store would stand."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import ringpress as rp
from ranks import collect, run_ranks, start_ranks

KEY = "test-job-key-" + "k" * 40
TCP = {"RINGPRESS_TRANSPORT": "tcp", "RINGPRESS_JOB_KEY": KEY}
PATTERN = np.full(16, 1234.5, dtype=np.float32).tobytes()  # what rank 0 sends, in clear

BODY = r"""
import os
x = np.full(1 << 15, 1234.5 * (rank + 1), dtype=np.float32)
expect = np.float32(sum(1234.5 * (r + 1) for r in range(size)))
try:
    comm.allreduce(x)
    emit({"ok": bool(np.all(x == expect)), "transport": comm.transport((rank + 1) % size)})
except rp.RingpressError as e:
    emit({"error": type(e).__name__, "msg": str(e)})
"""


class Relay:
    """Accepts connections and relays each to `target`, recording both directions; optionally
    flips one bit at byte `flip_at` of the first connection's client-to-server stream."""

    def __init__(self, target: tuple[str, int], flip_at: int | None = None, hold: bool = False):
        self.target = target
        self.flip_at = flip_at
        # hold: connections after the first wait for release() before reaching the target
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.up: list[bytearray] = []  # per connection: connector -> acceptor bytes
        self.down: list[bytearray] = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            up, down = bytearray(), bytearray()
            self.up.append(up)
            self.down.append(down)
            first = len(self.up) == 1
            threading.Thread(target=self._serve, args=(c, up, down, first), daemon=True).start()

    def _serve(self, c, up, down, first):
        if not first:
            self.released.wait(60)
        s = socket.create_connection(self.target)
        flip = self.flip_at if first else None
        threading.Thread(target=self._pump, args=(c, s, up, flip), daemon=True).start()
        threading.Thread(target=self._pump, args=(s, c, down, None), daemon=True).start()

    @staticmethod
    def _pump(src, dst, log, flip):
        while True:
            try:
                b = src.recv(1 << 16)
            except OSError:
                b = b""
            if not b:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            b = bytearray(b)
            if flip is not None and len(log) <= flip < len(log) + len(b):
                b[flip - len(log)] ^= 0x10
            log += b
            try:
                dst.sendall(b)
            except OSError:
                return

    def close(self):
        self.closed = True
        self.lsock.close()


def _start_rank(path: str, rank: int, size: int, port: int, env: dict) -> subprocess.Popen:
    e = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1")
    e.update(MASTER_PORT=str(port), PYTHONUNBUFFERED="1", RP_TEST_COMM_KW='{"timeout": 20}')
    e.update(env)
    return subprocess.Popen(
        [sys.executable, path], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _behind_relay(env: dict, size: int, flip_at: int | None = None, replay: bool = False):
    """Rank 0 alone, then its published address replaced by a relay's; ranks 1.. connect through
    it. With replay, the first connection's handshake, as captured, is sent again to rank 0 while
    the relay still holds the others back (so rank 0 is still accepting). Returns (results, relay, what the replay got back)."""
    procs, path, port = start_ranks(
        1, BODY, env=env, comm_kwargs={"timeout": 20}, rank_env={0: {"WORLD_SIZE": str(size)}}
    )
    # The attacker here got into the store: since the store checks the job key too, that takes
    # the key (test_store_hardening.py shows a client without it gets nowhere).
    store = rp.TCPStore("127.0.0.1", port, 20_000, key=env.get("RINGPRESS_JOB_KEY", ""))
    key = "ringpress/env/0/0/addr/0"
    rec = store.get(key, 20_000).decode()
    addr, host_id = rec.split("\n", 1)
    host, p = addr.rsplit(":", 1)
    relay = Relay((host, int(p)), flip_at, hold=replay)
    store.set(key, f"127.0.0.1:{relay.port}\n{host_id}".encode())
    for r in range(1, size):  # each reads every address before connecting
        procs.append(_start_rank(path, r, size, port, env))
    replayed = None
    if replay:
        t0 = time.monotonic()
        while not (relay.up and len(relay.up[0]) >= 84) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        hello, proof = bytes(relay.up[0][:48]), bytes(relay.up[0][48:84])
        s = socket.create_connection((host, int(p)), timeout=10)
        s.sendall(hello)
        got = b""
        while len(got) < 72:
            chunk = s.recv(72 - len(got))
            if not chunk:
                break
            got += chunk
        s.sendall(proof)
        try:
            tail = s.recv(1)  # rank 0 hangs up on a proof it cannot verify
        except OSError:
            tail = b""
        replayed = (got, tail)
        s.close()
    relay.released.set()  # now the other ranks reach rank 0
    res = collect(procs, path, timeout=90)
    relay.close()
    return res, relay, replayed


@pytest.mark.parametrize("encrypt", ["on", "off"])
def test_a_relay_sees_no_plaintext_and_its_replay_is_refused(encrypt):
    env = {**TCP, "RINGPRESS_ENCRYPT": encrypt}
    res, relay, (reply, tail) = _behind_relay(env, 3, replay=True)
    for r in res:
        assert r.returncode == 0 and r.records, r.stderr[-2000:]
        assert r.records[-1].get("ok") and r.records[-1]["transport"] == "tcp", r.records
    # The replayed hello got a reply (it needs no key), the replayed proof was refused.
    assert len(reply) == 72 and tail == b""
    assert "wrong job key" in res[0].stderr
    wire = b"".join(bytes(b) for b in relay.up + relay.down)
    assert len(wire) > 3 * (1 << 15)  # the payload did cross the relay
    assert KEY.encode() not in wire
    if encrypt == "on":
        assert PATTERN not in wire
    else:  # authenticated only: the control shows the search would find plaintext
        assert PATTERN in wire


def test_a_flipped_bit_fails_the_job_with_typed_errors_on_every_rank():
    # Byte 84 + 100 of rank 1's stream to rank 0: inside its first record after the handshake.
    res, _, _ = _behind_relay(TCP, 2, flip_at=84 + 100)
    errs = [r.records[-1] for r in res]
    assert all(e.get("error") == "TransportError" for e in errs), [r.stderr[-1500:] for r in res]
    assert "failed authentication" in errs[0]["msg"]
    assert "rank 0" in errs[1]["msg"] or "failed authentication" in errs[1]["msg"]


WRONG_KEY_BODY = r"""
t0 = time.monotonic()
# A store without a key, so that the ranks' own handshake is what meets the wrong key (from_env's
# store would refuse rank 1 first: test_store_hardening.py).
port = int(os.environ["MASTER_PORT"])
server = rp.TCPStoreServer("127.0.0.1", port, key="") if rank == 0 else None
store = rp.TCPStore("127.0.0.1", port, 10_000, key="")
try:
    rp.Communicator.from_store(store, rank, size, timeout=4)
    emit({"error": None})
except rp.RingpressError as e:
    emit({"error": type(e).__name__, "msg": str(e), "s": time.monotonic() - t0})
"""


def test_a_rank_with_another_key_is_refused_and_both_raise():
    procs, path, _ = start_ranks(
        2,
        WRONG_KEY_BODY,
        env={"RINGPRESS_TRANSPORT": "tcp", "RP_TEST_NO_COMM": "1"},
        rank_env={0: {"RINGPRESS_JOB_KEY": KEY}, 1: {"RINGPRESS_JOB_KEY": KEY[::-1]}},
    )
    r0, r1 = collect(procs, path, timeout=60)
    e0, e1 = r0.records[-1], r1.records[-1]
    # The connecting rank learns at once that rank 0 does not prove its key; rank 0 refused the
    # connection and times out waiting for a rank 1 that holds the key.
    assert e1["error"] == "TransportError" and "does not hold this job's key" in e1["msg"], e1
    assert e0["error"] == "TimeoutError" and "[1]" in e0["msg"], e0
    assert "wrong job key" in r0.stderr or "closed before completing" in r0.stderr
    assert e0["s"] < 4 + 10 and e1["s"] < 4 + 10


KEY_IN_STORE_BODY = r"""
x = np.ones(8, dtype=np.float32)
comm.allreduce(x)
try:
    comm._store.get("ringpress/env/0/0/secret", 200)
    in_store = True
except rp.RingpressError:
    in_store = False
emit({"ok": bool(np.all(x == size)), "in_store": in_store})
comm.close()
"""


@pytest.mark.parametrize("keyed", [True, False])
def test_a_configured_key_never_enters_the_store_and_no_key_warns_once(keyed):
    env = {"RINGPRESS_TRANSPORT": "tcp"}
    if keyed:
        env["RINGPRESS_JOB_KEY"] = KEY
    for r in run_ranks(2, KEY_IN_STORE_BODY, env=env, timeout=60):
        rec = r.records[-1]
        assert rec["ok"]
        # Without a key rank 0 shares a random one through the store (the warning below), and
        # from_env deletes that record once every rank holds it: in neither case is it left.
        assert rec["in_store"] is False
        assert r.stderr.count("no job key") == (0 if keyed else 1), r.stderr[-1000:]


def test_a_short_or_world_readable_key_is_refused(tmp_path):
    with pytest.raises(rp.UsageError, match="at least 32"):
        rp.Communicator(rp.HashStore(), 0, 2, job_key="short", timeout=2)
    f = tmp_path / "key"
    f.write_text(KEY + "\n")
    f.chmod(0o644)
    os.environ["RINGPRESS_JOB_KEY_FILE"] = str(f)
    try:
        with pytest.raises(rp.UsageError, match="owner-only"):
            rp.Communicator(rp.HashStore(), 0, 2, timeout=2)
    finally:
        del os.environ["RINGPRESS_JOB_KEY_FILE"]
