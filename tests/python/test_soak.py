"""Soak test (issue 8): 4 ranks run random collectives of random sizes, dtypes and ops, plus the
gradient codecs, for a bounded time; every result is checked, and RSS and open fds must be stable.

Outside the fast set (``slow`` marker); scripts/soak.sh runs it (CI: 45 s). Duration:
``RP_SOAK_SECONDS`` (default 120).
"""

from __future__ import annotations

import os

import pytest
from ranks import run_ranks

BODY = r"""
import torch
seconds = float(os.environ["RP_SOAK_SECONDS"])
rng = np.random.default_rng(12345)          # the same op sequence on every rank
local = np.random.default_rng(rank)          # per-rank data
DT = ["float32", "float64", "float16", "int32", "int64", "uint8"]

def fds():
    return len(os.listdir("/proc/self/fd"))

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

bad = []
ops = 0
codec = rp.Pipeline(rp.TopK(ratio=0.01), codec="zstd")
ef = rp.ErrorFeedback(rp.Quantize(bits=8))
quant = rp.Quantize(bits=4, block=256, stochastic=True)
t0 = time.monotonic()
marks = []
while True:
    # Every rank decides together whether to stop (time differs slightly across ranks).
    stop = np.array([time.monotonic() - t0 > seconds], np.uint8)
    comm.allreduce(stop, op="max")
    if stop[0]:
        break
    kind = int(rng.integers(0, 7))
    n = int(rng.integers(0, 1 << int(rng.integers(1, 19))))
    dt = DT[int(rng.integers(0, len(DT)))]
    if kind == 0:
        op = ["sum", "min", "max"][int(rng.integers(0, 3))]
        x = np.full(n, rank + 1, dt)
        comm.allreduce(x, op=op)
        want = {"sum": size * (size + 1) // 2, "min": 1, "max": size}[op]
        if n and not np.all(x == np.array(want, dt)):
            bad.append(f"allreduce {dt} {op} n={n}")
    elif kind == 1:
        root = int(rng.integers(0, size))
        x = np.full(n, rank, dt)
        comm.broadcast(x, root=root)
        if n and not np.all(x == root):
            bad.append(f"broadcast n={n}")
    elif kind == 2:
        counts = [int(c) for c in rng.integers(0, n // size + 2, size)]
        v = comm.allgatherv(np.full(counts[rank], rank, dt), counts)
        if not np.array_equal(v, np.concatenate([np.full(c, q, dt) for q, c in enumerate(counts)])):
            bad.append("allgatherv")
    elif kind == 3:
        k = n // size + 1
        out = comm.reduce_scatter(np.ones(k * size, np.float32))
        if not np.all(out == size):
            bad.append("reduce_scatter")
    elif kind == 4:
        ws = [comm.allreduce(np.ones(int(rng.integers(1, 5000)), np.int64), async_op=True) for _ in range(4)]
        for w in ws:
            if not np.all(w.result() == size):
                bad.append("async")
    elif kind == 5:
        parts = [np.ones(int(rng.integers(0, 3000)), np.float64) for _ in range(3)]
        comm.allreduce_coalesced(parts)
        if not all(np.all(p == size) for p in parts):
            bad.append("coalesced")
    else:
        g = local.standard_normal(max(n, 1)).astype(np.float32)
        y = codec.decode(codec.encode(g))
        ef.decode(ef.encode(g[:1000] if g.size >= 1000 else np.zeros(1000, np.float32), key="soak"))
        q = quant.decode(quant.encode(g))
        if y.shape != g.shape or q.shape != g.shape:
            bad.append("codec shapes")
        comm.barrier()
    ops += 1
    if not marks and time.monotonic() - t0 > seconds * 0.25:
        marks.append((fds(), rss_mb()))
marks.append((fds(), rss_mb()))
emit({"ops": ops, "bad": bad[:10], "marks": marks, "stats": comm.stats()})
comm.close()
"""


@pytest.mark.slow
def test_soak_four_ranks():
    seconds = float(os.environ.get("RP_SOAK_SECONDS", "120"))
    res = run_ranks(4, BODY, timeout=seconds + 120, env={"RP_SOAK_SECONDS": seconds})
    for r in res:
        rec = r.records[0]
        assert rec["bad"] == [], rec["bad"]
        assert rec["ops"] > 50
        (f0, m0), (f1, m1) = rec["marks"][0], rec["marks"][-1]
        assert f1 == f0, rec["marks"]
        assert m1 - m0 < 30, rec["marks"]
