"""Allreduce with compression on the wire (ring_codec.cc), as real processes over shm and tcp:
lossless is bit-identical to plain, lossy kinds stay within their error bound, every rank ends
with the same bits, and misuse is a clear error."""

from __future__ import annotations

import pytest
from ranks import run_ranks

BODY = r"""
import hashlib, torch
P = size
n = 200_003
def grad(q):
    return np.random.default_rng(q).standard_normal(n).astype(np.float32)
ref = sum(grad(q).astype(np.float64) for q in range(P))
out = {}
plain = grad(rank); comm.allreduce(plain)
for comp, tol in [("lossless", 0.0), ("bf16", 0.01), ("fp16", 0.002), ("int8", 0.02), ("int4", 0.3)]:
    x = grad(rank)
    comm.allreduce(x, compression=comp)
    err = float(np.linalg.norm(x - ref) / np.linalg.norm(ref))
    digest = hashlib.sha256(x.tobytes()).hexdigest()
    out[comp] = {"err": err, "tol": tol, "same_as_plain": bool(np.array_equal(x, plain)), "digest": digest}
# avg, other dtypes through lossless, torch tensors, small and empty buffers, async.
a = grad(rank); comm.allreduce(a, op="avg", compression="int8")
out["avg_err"] = float(np.linalg.norm(a - ref / P) / np.linalg.norm(ref / P))
i = np.arange(100_000, dtype=np.int64) * (rank + 1)
comm.allreduce(i, op="max", compression="lossless", codec="lz4")
out["int_ok"] = bool(np.array_equal(i, np.arange(100_000, dtype=np.int64) * P))
t = torch.randn(50_000, generator=torch.Generator().manual_seed(rank)).to(torch.bfloat16)
tp = t.clone()
comm.allreduce(tp)
comm.allreduce(t, compression="lossless")
out["bf16_ok"] = bool(torch.equal(t, tp))
for k in (0, 1, 5):
    s = np.ones(k, np.float32); comm.allreduce(s, compression="int8")
    out.setdefault("small_ok", True)
    out["small_ok"] &= bool(np.allclose(s, P))
w = comm.allreduce(grad(rank), compression="bf16", async_op=True)
out["async_err"] = float(np.linalg.norm(w.result() - ref) / np.linalg.norm(ref))
errors = []
for bad in [lambda: comm.allreduce(np.ones(10, np.int32), compression="int8"),
            lambda: comm.allreduce(np.ones(10, np.float32), op="max", compression="int8"),
            lambda: comm.allreduce(np.ones(10, np.float32), compression="gzip")]:
    try:
        bad()
        errors.append("no error")
    except rp.UsageError:
        pass
out["errors"] = errors
out["broken"] = comm.broken
out["stages"] = comm.stats()["stages"]
out["wire"] = [comm.stats()["bytes_sent"], comm.stats()["payload_bytes"]]
emit(out)
comm.close()
"""


@pytest.mark.parametrize("nranks,transport", [(2, "shm"), (3, "tcp"), (4, "shm")])
def test_compressed_allreduce(nranks, transport):
    env = {"RINGPRESS_TRANSPORT": transport}
    if nranks == 4:
        env["RINGPRESS_SEGMENT_BYTES"] = "16384"  # many segments, slots reused constantly
    res = run_ranks(nranks, BODY, timeout=180, env=env)
    recs = [r.records[0] for r in res]
    for rec in recs:
        assert rec["errors"] == [] and not rec["broken"], rec
        assert rec["lossless"]["same_as_plain"] and rec["lossless"]["err"] < 1e-6
        for comp in ("bf16", "fp16", "int8", "int4"):
            assert rec[comp]["err"] <= rec[comp]["tol"], (comp, rec[comp])
            assert rec[comp]["err"] > 0  # lossy means lossy: the codec really ran
        assert rec["avg_err"] <= 0.02
        assert rec["int_ok"] and rec["bf16_ok"] and rec["small_ok"]
        assert rec["async_err"] <= 0.01
        # Stage counters: the compressed ring encoded and decoded, the plain ring reduced, and
        # every stage that ran saw bytes; fewer bytes went on the wire than were reduced.
        st = rec["stages"]
        for stage in ("wait", "reduce", "encode", "decode"):
            assert st[stage]["seconds"] > 0 and st[stage]["bytes"] > 0, (stage, st)
        assert rec["wire"][0] < rec["wire"][1] * 2 * (nranks - 1) / nranks
    for comp in ("lossless", "bf16", "fp16", "int8", "int4"):
        assert len({rec[comp]["digest"] for rec in recs}) == 1, f"{comp}: ranks disagree"


def test_mismatched_compression_is_a_collective_mismatch():
    body = r"""
try:
    comm.allreduce(np.ones(100_000, np.float32), compression="int8" if rank == 0 else "bf16")
    emit({"error": None})
except rp.RingpressError as e:
    emit({"error": type(e).__name__, "msg": str(e)})
"""
    for r in run_ranks(3, body, timeout=60, comm_kwargs={"timeout": 10}):
        rec = r.records[0]
        assert rec["error"] == "UsageError" and "mismatch" in rec["msg"], rec


TOPK_BODY = r"""
import hashlib
n = 300_007
def grad(q, step=0):
    return np.random.default_rng(1000 * step + q).standard_normal(n).astype(np.float32)
out = {}
# Exact selection: the result is the sum of every rank's exact top-k.
x = grad(rank)
comm.allreduce(x, compression="topk", ratio=0.01, sampled=False)
ref = np.zeros(n)
k = int(np.ceil(0.01 * n))
for q in range(size):
    g = grad(q)
    idx = np.argpartition(-np.abs(g), k)[:k]
    ref[idx] += g[idx]
out["exact_ok"] = bool(np.allclose(x, ref, rtol=0, atol=1e-5))
out["digest"] = hashlib.sha256(x.tobytes()).hexdigest()
# Sampled selection: each rank's count within +5% of k (so at most size * 1.05 k nonzeros).
y = grad(rank, 1)
comm.allreduce(y, compression="topk", ratio=0.01)
out["nnz"] = int(np.count_nonzero(y))
out["k"] = k
# Error feedback: outputs summed over steps + every rank's final residual == all inputs summed.
res = np.zeros(n, np.float32)
tot_in = np.zeros(n)
tot_out = np.zeros(n)
for step in range(4):
    g = grad(rank, 10 + step)
    tot_in += g
    z = g.copy()
    comm.allreduce(z, compression="topk", ratio=0.02, residual=res)
    tot_out += z
all_in = comm.allreduce(tot_in.copy())
all_res = comm.allreduce(res.astype(np.float64))
out["ef_err"] = float(np.abs(tot_out + all_res - all_in).max())
out["res_nonzero"] = int(np.count_nonzero(res))
a = grad(rank)
comm.allreduce(a, op="avg", compression="topk", ratio=1.0)
out["ratio1_avg_ok"] = bool(np.allclose(a, sum(grad(q).astype(np.float64) for q in range(size)) / size, atol=1e-5))
errs = []
for bad in [lambda: comm.allreduce(np.ones(10, np.float32), compression="int8", residual=np.zeros(10, np.float32)),
            lambda: comm.allreduce(np.ones(10, np.float32), compression="topk", residual=np.zeros(9, np.float32)),
            lambda: comm.allreduce(np.ones(10, np.float32), compression="topk", ratio=0.0)]:
    try:
        bad()
        errs.append("no error")
    except rp.UsageError:
        pass
out["errors"] = errs
emit(out)
comm.close()
"""


@pytest.mark.parametrize("nranks,transport", [(2, "tcp"), (3, "shm")])
def test_topk_sparse_allreduce_with_error_feedback(nranks, transport):
    recs = [r.records[0] for r in run_ranks(nranks, TOPK_BODY, timeout=120, env={"RINGPRESS_TRANSPORT": transport})]
    for rec in recs:
        assert rec["exact_ok"], rec
        assert 0 < rec["nnz"] <= nranks * int(rec["k"] * 1.05 + 1), rec
        assert rec["ef_err"] < 1e-4 and rec["res_nonzero"] > 0, rec
        assert rec["ratio1_avg_ok"] and rec["errors"] == [], rec
    assert len({rec["digest"] for rec in recs}) == 1


AUTO_BODY = r"""
import hashlib
g = np.random.default_rng(rank).standard_normal(2_000_000).astype(np.float32)
res = np.zeros_like(g)
digests = []
for i in range(3):
    x = g.copy()
    comm.allreduce(x, compression="auto", allow="lossless,int8,topk", residual=res)
    digests.append(hashlib.sha256(x.tobytes()).hexdigest())
st = comm.stats()["auto"]
errs = []
for bad in [lambda: comm.allreduce(g.copy(), compression="auto", allow="topk"),    # topk needs a residual
            lambda: comm.allreduce(g.copy(), compression="auto", allow="gzip")]:
    try:
        bad()
        errs.append("no error")
    except rp.UsageError:
        pass
# Non-float32 data: auto may only use lossless (or plain) and stays exact.
i64 = np.arange(100_000, dtype=np.int64) * (rank + 1)
comm.allreduce(i64, compression="auto", allow="lossless,int8")
# Past the 64th auto request the model is recalibrated, corrected by what the requests in between
# measured (actual / predicted), and every rank still chooses the same.
small = np.random.default_rng(rank).standard_normal(100_000).astype(np.float32)
for i in range(66):
    y = small.copy()
    comm.allreduce(y, compression="auto", allow="lossless,int8")
    digests.append(hashlib.sha256(y.tobytes()).hexdigest())
st2 = comm.stats()["auto"]
emit({"digests": digests, "auto": st, "auto2": st2, "errors": errs,
      "int_ok": bool(np.array_equal(i64, np.arange(100_000, dtype=np.int64) * size * (size + 1) // 2))})
comm.close()
"""


def test_auto_mode_agrees_on_every_rank_and_reports_its_choice():
    recs = [r.records[0] for r in run_ranks(3, AUTO_BODY, timeout=120)]
    for rec in recs:
        st = rec["auto"]
        assert st["calibrations"] == 1
        assert sum(st["counts"].values()) == 3
        assert st["last"] in ("none", "lossless", "int8", "topk")
        assert set(st["predicted_s"]) == {"none", "lossless", "int8", "topk"}
        assert all(v > 0 for v in st["predicted_s"].values()) and st["actual_s"] > 0
        assert rec["errors"] == [] and rec["int_ok"]
    # Every rank made the same choices (same model) and holds the same bits.
    assert len({tuple(rec["digests"]) for rec in recs}) == 1
    assert len({str(rec["auto"]["counts"]) for rec in recs}) == 1
    for rec in recs:
        assert rec["auto2"]["calibrations"] == 2, rec["auto2"]
    assert len({str(rec["auto2"]["counts"]) for rec in recs}) == 1
