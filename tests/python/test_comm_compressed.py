"""Allreduce with compression on the wire (ring_codec.cc), as real processes over shm and tcp:
lossless is bit-identical to plain, lossy kinds stay within their error bound, every rank ends
with the same bits, and misuse is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import ringpress as rp
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
    msgs = []
    for r in run_ranks(3, body, timeout=60, comm_kwargs={"timeout": 10}):
        rec = r.records[0]
        assert rec["error"] == "UsageError" and "mismatch" in rec["msg"], rec
        msgs.append(rec["msg"])
    # The codec byte of the header names both sides' codecs (on the ranks that saw the mismatch).
    assert any("int8" in m and "bf16" in m for m in msgs), msgs


def test_the_codec_lists_come_from_the_core_registry():
    import ringpress.torch.hooks as hooks

    rows = rp.wire_codecs()
    names = [c["name"] for c in rows]
    assert names[:12] == [
        "none", "lossless", "bf16", "fp16", "int8", "int4", "topk",
        "int2", "sign", "ternary", "randomk", "threshold",
    ]  # fmt: skip
    assert len({c["id"] for c in rows}) == len(rows) and all(0 <= c["id"] < 32 for c in rows)
    assert [c["name"] for c in rows if c["exact"]] == ["none", "lossless"]
    assert {c["name"] for c in rows if c["schedule"] == "allgather"} == {
        "topk",
        "randomk",
        "threshold",
    }
    assert hooks.KINDS == (*names, "auto")
    assert set(hooks._LOSSY) == {c["name"] for c in rows if not c["exact"]} | {"auto"}
    with pytest.raises(rp.UsageError, match="expected one of none, lossless"):
        with rp.Communicator(rp.HashStore(), 0, 1) as comm:
            comm.allreduce(np.ones(4, np.float32), compression="zip")


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
for bad in [lambda: comm.allreduce(np.ones(10, np.float32), compression="int8", residual=np.zeros(9, np.float32)),
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
    recs = [
        r.records[0]
        for r in run_ranks(nranks, TOPK_BODY, timeout=120, env={"RINGPRESS_TRANSPORT": transport})
    ]
    for rec in recs:
        assert rec["exact_ok"], rec
        assert 0 < rec["nnz"] <= nranks * int(rec["k"] * 1.05 + 1), rec
        assert rec["ef_err"] < 1e-4 and rec["res_nonzero"] > 0, rec
        assert rec["ratio1_avg_ok"] and rec["errors"] == [], rec
    assert len({rec["digest"] for rec in recs}) == 1


# One codec stack: a sparse allreduce (allgather schedule) of the codec a compressor names sums,
# in rank order, exactly what each rank's compressor container decodes to, when the compressor's
# seed is the request's sequence number (the collective's seed; the first request is 0).
ONE_STACK_BODY = r"""
n = 50_003
def grad(q):
    return (np.random.default_rng(q).standard_t(3, n) * 1e-2).astype(np.float32)
cases = [
    lambda s: rp.TopK(ratio=0.01, method="exact", seed=s),
    lambda s: rp.TopK(ratio=0.02, tolerance=0.1, values="fp16", seed=s),
    lambda s: rp.RandomK(ratio=0.03, seed=s),
    lambda s: rp.RandomK(ratio=0.01, seed=s, values="fp16"),
    lambda s: rp.Threshold(threshold=0.05),
    lambda s: rp.Threshold(threshold=0.02, values="fp16"),
]
out = {}
for seq, make in enumerate(cases):
    c = make(seq)
    x = grad(rank)
    comm.allreduce(x, compression=c.wire_codec, **c.wire_params)
    want = np.zeros(n, np.float32)
    for q in range(size):
        want += make(seq).decode(make(seq).encode(grad(q)))
    out[f"{seq}:{c!r}"] = bool(np.array_equal(x.view(np.uint32), want.view(np.uint32)))
emit(out)
comm.close()
"""


@pytest.mark.parametrize("nranks,transport", [(2, "tcp"), (3, "shm")])
def test_sparse_allreduce_sums_the_compressors_payloads(nranks, transport):
    for r in run_ranks(nranks, ONE_STACK_BODY, timeout=120, env={"RINGPRESS_TRANSPORT": transport}):
        rec = r.records[0]
        assert rec and all(rec.values()), rec


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


# ----------------------------------------------------------------------------------------------
# Error feedback for the ring kinds (ring_codec.cc): every rank keeps, in its residual, the
# rounding of every segment it encodes (its own data at the first hop, the partial sums it
# forwards, the final sum of the block it owns) and adds it to its next contribution.

# The ring's layout, reproduced here: P nearly equal blocks (the first n % P one larger), each cut
# into segments of SEG elements; quantization blocks of B restart at every segment.
EF_LAYOUT = r"""
n, B, SEG = 50_003, 300, 2048   # RINGPRESS_SEGMENT_BYTES = 4 * SEG
P = size
def codec(kind):
    return {"bf16": rp.BF16(), "fp16": rp.FP16(), "int8": rp.Quantize(bits=8, block=B),
            "int4": rp.Quantize(bits=4, block=B)}[kind]
def segments(block):
    base, extra = divmod(n, P)
    off = block * base + min(block, extra)
    ln = base + (1 if block < extra else 0)
    return [slice(off + k, off + min(ln, k + SEG)) for k in range(0, ln, SEG)]
def roundtrip(kind, v):
    c = codec(kind)
    return c.decode(c.encode(v))
def simulate(kind, xps):
    # The compressed ring on every rank's x' = x + r: block b is summed along b+1, b+2, ..., b;
    # each rank encodes what it sends (the owner: the final sum) and keeps p - D(E(p)).
    res = [np.zeros(n, np.float32) for _ in range(P)]
    out = np.empty(n, np.float32)
    for b in range(P):
        chain = [(b + 1 + h) % P for h in range(P)]
        for sl in segments(b):
            p = xps[chain[0]][sl].copy()
            for h, q in enumerate(chain):
                d = roundtrip(kind, p)
                res[q][sl] = p - d
                if h + 1 < P:
                    p = d + xps[chain[h + 1]][sl]
            out[sl] = d
    return out, res
"""

EF_EXACT_BODY = (
    EF_LAYOUT
    + r"""
import hashlib
out = {}
for kind in ("bf16", "fp16", "int8", "int4"):
    r = np.zeros(n, np.float32)
    prev = [np.zeros(n, np.float32) for _ in range(P)]
    rec = {}
    for step in range(2):   # residual zeros, then the residual the first step left
        xs = [np.random.default_rng(10 * step + q).standard_normal(n).astype(np.float32) for q in range(P)]
        xps = [x + pr for x, pr in zip(xs, prev)]
        y = xs[rank].copy()
        comm.allreduce(y, compression=kind, block=B, residual=r)
        ref_y, ref_r = simulate(kind, xps)
        if step == 0:
            # The block this rank sends at its first hop: r = x - D(E(x)) of its own data alone.
            own = segments((rank - 1) % P)
            rec["first_hop"] = all(np.array_equal(r[sl], xs[rank][sl] - roundtrip(kind, xs[rank][sl])) for sl in own)
            rec["nonzero"] = int(np.count_nonzero(r))
        rec[f"step{step}"] = [bool(np.array_equal(r, ref_r[rank])), bool(np.array_equal(y, ref_y))]
        prev = ref_r
    rec["digest"] = hashlib.sha256(y.tobytes()).hexdigest()
    out[kind] = rec
emit(out)
comm.close()
"""
)


@pytest.mark.parametrize("nranks,transport", [(2, "shm"), (3, "tcp")])
def test_ring_error_feedback_matches_a_reference_ring(nranks, transport):
    env = {"RINGPRESS_TRANSPORT": transport, "RINGPRESS_SEGMENT_BYTES": str(4 * 2048)}
    recs = [r.records[0] for r in run_ranks(nranks, EF_EXACT_BODY, timeout=180, env=env)]
    for rec in recs:
        for kind in ("bf16", "fp16", "int8", "int4"):
            o = rec[kind]
            assert o["first_hop"], (kind, o)
            assert o["nonzero"] > 0, (kind, o)  # lossy: something was dropped and kept
            # residual and result equal bit for bit a ring simulated from the python codecs
            assert o["step0"] == [True, True] and o["step1"] == [True, True], (kind, o)
    for kind in ("bf16", "fp16", "int8", "int4"):
        assert len({rec[kind]["digest"] for rec in recs}) == 1, f"{kind}: ranks disagree"


EF_CONSERVE_BODY = (
    EF_LAYOUT
    + r"""
import hashlib
def gauss(t, q):
    return np.random.default_rng(1000 * t + q).standard_normal(n).astype(np.float32)
def biased(t, q):
    # int4, scale 1 per block (one 7.0), every other value just below the 0.5 rounding threshold.
    v = np.full(n, 0.49 - 0.01 * q, np.float32)
    v[::B] = 7.0
    return v
def run(kind, gen, T, ef):
    r = np.zeros(n, np.float32) if ef else None
    tin, tout = np.zeros(n), np.zeros(n)
    for t in range(T):
        g = gen(t, rank)
        tin += g
        y = g.copy()
        comm.allreduce(y, compression=kind, block=B, residual=r)
        tout += y
    err = tout - comm.allreduce(tin)
    if ef:
        err += comm.allreduce(r.astype(np.float64))
    return {"err": float(np.abs(err).max()), "rmax": float(np.abs(r).max()) if ef else 0.0,
            "digest": hashlib.sha256(y.tobytes()).hexdigest()}
out = {}
for kind in ("bf16", "int8", "int4"):
    for T in (5, 20):
        out[f"{kind} ef {T}"] = run(kind, gauss, T, True)
    out[f"{kind} plain 20"] = run(kind, gauss, 20, False)
for T in (5, 20):
    out[f"biased ef {T}"] = run("int4", biased, T, True)
    out[f"biased plain {T}"] = run("int4", biased, T, False)
emit(out)
comm.close()
"""
)


@pytest.mark.parametrize("nranks,transport", [(2, "tcp"), (3, "shm")])
def test_ring_error_feedback_conserves_the_sum_over_steps(nranks, transport):
    env = {"RINGPRESS_TRANSPORT": transport, "RINGPRESS_SEGMENT_BYTES": str(4 * 2048)}
    recs = [r.records[0] for r in run_ranks(nranks, EF_CONSERVE_BODY, timeout=240, env=env)]
    for rec in recs:
        for kind in ("bf16", "int8", "int4"):
            # sum(outputs) + sum(final residuals) - sum(inputs): fp32 rounding only, the same
            # bound after 5 and after 20 steps (measured ~1e-6)...
            for T in (5, 20):
                assert rec[f"{kind} ef {T}"]["err"] < 1e-4, (kind, T, rec[f"{kind} ef {T}"])
            # ...where without feedback the rounding accumulates (int8 ~0.3, int4 ~5 after 20).
            assert rec[f"{kind} plain 20"]["err"] > 100 * rec[f"{kind} ef 20"]["err"], (kind, rec)
        # Biased int4: without feedback every step loses all the 0.49s (error linear in T)...
        lost_per_step = sum(0.49 - 0.01 * q for q in range(nranks))
        p5, p20 = rec["biased plain 5"]["err"], rec["biased plain 20"]["err"]
        assert p5 >= 0.99 * 5 * lost_per_step and p20 >= 0.99 * 20 * lost_per_step, (p5, p20)
        # ...with it nothing is lost, and the residual stays within half a scale (of the sum: P).
        for T in (5, 20):
            b = rec[f"biased ef {T}"]
            assert b["err"] < 1e-4 and b["rmax"] <= 0.5 * nranks + 1e-5, (T, b)
    for key in recs[0]:
        assert len({rec[key]["digest"] for rec in recs}) == 1, f"{key}: ranks disagree"


EF_EXACT_KINDS_BODY = r"""
n = 100_003
g = np.random.default_rng(rank).standard_normal(n).astype(np.float32)
r0 = np.random.default_rng(50 + rank).standard_normal(n).astype(np.float32)
plain = g.copy(); comm.allreduce(plain)
out = {}
for comp in ("none", "lossless"):
    r = r0.copy(); x = g.copy()
    comm.allreduce(x, compression=comp, residual=r)
    out[comp] = [bool(np.array_equal(r, r0)), bool(np.array_equal(x, plain))]
# Auto choosing an exact kind delivers the residual (x + r summed exactly) and zeroes it.
flushed = g + r0; comm.allreduce(flushed)
r = r0.copy(); x = g.copy()
comm.allreduce(x, compression="auto", allow="lossless", residual=r)
out["auto"] = [bool(not r.any()), bool(np.array_equal(x, flushed))]
# Non-float32 data with lossless: the residual has nothing to do and is left alone.
i = np.arange(n, dtype=np.float64) * (rank + 1)
r = r0.copy(); comm.allreduce(i, compression="lossless", residual=r)
out["f64_lossless"] = [bool(np.array_equal(r, r0)), bool(np.array_equal(i, np.arange(n) * size * (size + 1) / 2))]
# Auto on data that no lossy kind can take (float16, float64, a max): the float32 residual is left
# alone and the data is reduced exactly (it used to be added into x as if x were float32).
for name, dt, op in (("auto_f16", np.float16, "sum"), ("auto_f64", np.float64, "sum"), ("auto_max", np.float32, "max")):
    v = (np.arange(n) % 7 + rank).astype(dt); want = v.copy(); comm.allreduce(want, op=op)
    r = r0.copy(); comm.allreduce(v, op=op, compression="auto", allow="lossless,int8", residual=r)
    out[name] = [bool(np.array_equal(r, r0)), bool(np.array_equal(v, want))]
# Auto may pick plain, lossless or int8 here: flushed for the first two, conserved for int8.
r = r0.copy(); x = g.copy()
comm.allreduce(x, compression="auto", allow="lossless,int8", residual=r)
last = comm.stats()["auto"]["last"]
exact = np.allclose(x + comm.allreduce(r.astype(np.float64)), comm.allreduce((g + r0).astype(np.float64)), rtol=0, atol=1e-4)
out["auto_int8"] = [last, bool(not r.any()), bool(np.array_equal(x, flushed)), bool(exact)]
emit(out)
comm.close()
"""


def test_exact_kinds_leave_or_deliver_the_residual():
    for res in run_ranks(2, EF_EXACT_KINDS_BODY, timeout=120):
        rec = res.records[0]
        for comp in (
            "none",
            "lossless",
            "auto",
            "f64_lossless",
            "auto_f16",
            "auto_f64",
            "auto_max",
        ):
            assert rec[comp] == [True, True], (comp, rec)
        last, zeroed, same_as_flushed, conserved = rec["auto_int8"]
        if last in ("none", "lossless"):
            assert zeroed and same_as_flushed, rec
        else:
            assert last == "int8" and conserved and not zeroed, rec


EF_MISUSE_BODY = r"""
f = lambda k: np.ones(k, np.float32)
bad = {
    "int8 short": lambda: comm.allreduce(f(1000), compression="int8", residual=f(999)),
    "int4 long": lambda: comm.allreduce(f(1000), compression="int4", residual=f(1001)),
    "bf16 float64": lambda: comm.allreduce(f(1000), compression="bf16", residual=np.zeros(1000)),
    "fp16 int32": lambda: comm.allreduce(f(1000), compression="fp16", residual=np.zeros(1000, np.int32)),
    "none short": lambda: comm.allreduce(f(1000), residual=f(10)),
    "lossless short": lambda: comm.allreduce(f(1000), compression="lossless", residual=f(10)),
    "auto short": lambda: comm.allreduce(f(1000), compression="auto", allow="int8", residual=f(10)),
    "int8 x float64": lambda: comm.allreduce(np.ones(1000), compression="int8", residual=f(1000)),
    "int8 op max": lambda: comm.allreduce(f(1000), op="max", compression="int8", residual=f(1000)),
}
errors = {}
for name, fn in bad.items():
    try:
        fn()
        errors[name] = "no error"
    except rp.UsageError as e:
        errors[name] = "UsageError"
    except Exception as e:
        errors[name] = type(e).__name__ + ": " + str(e)
# Argument errors leave the communicator usable.
r = np.zeros(1000, np.float32); y = f(1000)
comm.allreduce(y, compression="int8", residual=r)
emit({"errors": errors, "after": bool(np.allclose(y, size)), "broken": comm.broken})
comm.close()
"""


def test_bad_residual_is_a_usage_error_on_every_rank():
    for res in run_ranks(3, EF_MISUSE_BODY, timeout=120):
        rec = res.records[0]
        assert {k: v for k, v in rec["errors"].items() if v != "UsageError"} == {}, res.rank
        assert rec["after"] and not rec["broken"], rec


def test_a_bad_codec_parameter_is_refused_and_leaves_the_communicator_usable():
    body = r"""
x = np.ones(50_000, np.float32)
try:
    comm.allreduce(x, compression="lossless", level=99)
    emit({"error": None})
except rp.RingpressError as e:
    emit({"error": type(e).__name__, "msg": str(e)})
y = np.full(50_000, rank + 1.0, np.float32)
comm.allreduce(y, compression="int8")
emit({"broken": comm.broken, "sum": float(y[123])})
"""
    for r in run_ranks(2, body, timeout=60, comm_kwargs={"timeout": 20}):
        err, after = r.records
        assert err["error"] == "UsageError" and "level" in err["msg"], err
        assert not after["broken"] and abs(after["sum"] - 3.0) < 0.05, after


NONFINITE_BODY = r"""
import hashlib
n, block = 100_003, 512
g = np.random.default_rng(rank).standard_normal(n).astype(np.float32)
ref = sum(np.random.default_rng(q).standard_normal(n).astype(np.float64) for q in range(size))
bad_block = 37
out = {}
SPARSE = {
    "topk": {"compression": "topk", "ratio": 0.01},
    "topk-exact": {"compression": "topk", "ratio": 0.01, "sampled": False},
    "threshold": {"compression": "threshold", "threshold": 2.0},
    "randomk": {"compression": "randomk", "ratio": 0.01},
    # auto calibrates on its first call: it encodes this data with each allowed kind (it used
    # to refuse the NaN there)
    "auto": {"compression": "auto", "allow": ("topk", "threshold", "int8"), "threshold": 2.0},
}
for comp in ("int8", "int4", "int2", "sign", "ternary", "bf16", *SPARSE):
    for feedback in (False, True):
        if comp == "auto" and not feedback:
            continue  # auto may pick a sparse kind only with error feedback
        x = g.copy()
        if rank == size - 1:
            x[bad_block * block + 100] = np.nan if comp != "bf16" else np.inf
        if rank == 0:  # another NaN there, with other bits: every rank must still agree on them
            x[bad_block * block + 100] = -np.float32(np.nan)
            if comp == "topk-exact":
                x[:50] = np.inf  # more non-finite values than k (1001): some stay unsent
                x[50:1200] = np.nan
        if comp in SPARSE:
            kw = dict(SPARSE[comp])
        else:
            kw = {"compression": comp}
        if comp not in SPARSE and comp != "bf16":
            kw["block"] = block
        r = np.full(n, 1e-3, np.float32) if feedback else None
        if feedback:
            kw["residual"] = r
        comm.allreduce(x, **kw)
        nonfinite = np.flatnonzero(~np.isfinite(x))
        ok = np.isfinite(x)
        err = float(np.linalg.norm(x[ok] - ref[ok]) / np.linalg.norm(ref[ok]))
        out[f"{comp} {feedback}"] = {
            "nonfinite": [int(nonfinite.min()), int(nonfinite.max()), len(nonfinite)] if len(nonfinite) else [],
            "err": err,
            "r_finite": bool(np.isfinite(r).all()) if feedback else True,
            # the rank that overflowed keeps no residual in that block (bf16: that element)
            "r_bad": float(np.abs(r[bad_block * block : (bad_block + 1) * block]).max() if comp not in ("bf16", *SPARSE) else abs(r[bad_block * block + 100])) if feedback and rank == size - 1 else 0.0,
            "digest": hashlib.sha256(x.tobytes()).hexdigest(),
        }
# The communicator is untouched: the next call (plain and compressed) is exact / within bounds.
y = np.full(1000, float(rank + 1), np.float32); comm.allreduce(y)
z = g.copy(); comm.allreduce(z, compression="int8")
out["after"] = [bool((y == size * (size + 1) / 2).all()), float(np.linalg.norm(z - ref) / np.linalg.norm(ref)), comm.broken]
emit(out)
comm.close()
"""


@pytest.mark.parametrize("nranks,transport", [(2, "tcp"), (3, "shm")])
def test_nonfinite_input_gives_nonfinite_blocks_not_an_error(nranks, transport):
    # A NaN or Inf in one rank's gradient (an fp16 loss-scaling overflow step): a plain sum gives
    # non-finite values there, so the lossy kinds give NaN in that block on every rank (bf16:
    # the element), the call returns normally, the residual stays finite (0 where the value was
    # lost) and the communicator stays usable (it used to raise mid-ring and break the job).
    recs = [
        r.records[0]
        for r in run_ranks(
            nranks, NONFINITE_BODY, timeout=180, env={"RINGPRESS_TRANSPORT": transport}
        )
    ]
    lo = 37 * 512
    for rec in recs:
        for fb in (False, True):  # sent only if drawn; with feedback no NaN stays in r either way
            got = rec[f"randomk {fb}"]
            assert got["r_finite"] and got["r_bad"] == 0.0 and len(got["nonfinite"]) <= 1, got
        for comp in ("topk", "threshold", "auto"):
            for fb in (False, True) if comp != "auto" else (True,):
                got = rec[f"{comp} {fb}"]  # the NaN is sent first: the sum is NaN there only
                assert got["nonfinite"] == [lo + 100, lo + 100, 1], (comp, fb, got)
                assert got["r_finite"] and got["r_bad"] == 0.0, (comp, fb, got)
        for fb in (False, True):
            # 1201 non-finite values, k = 1001: the sum is not finite where they were sent (NaN
            # ranks above Inf; equal NaNs go by lowest index: 50..1050; rank 0 sends its one NaN),
            # and the unsent ones (NaN and Inf) leave no residual either
            got = rec[f"topk-exact {fb}"]
            assert got["nonfinite"] == [50, lo + 100, 1002], got
            assert got["r_finite"], got
        for comp in ("int8", "int4", "int2", "sign", "ternary"):
            for fb in (False, True):
                got = rec[f"{comp} {fb}"]
                assert got["nonfinite"] == [lo, lo + 511, 512], (comp, fb, got)
                assert got["r_finite"] and got["r_bad"] == 0.0, (comp, fb, got)
        for fb in (False, True):
            assert rec[f"bf16 {fb}"]["nonfinite"] == [lo + 100, lo + 100, 1], rec[f"bf16 {fb}"]
            assert rec[f"bf16 {fb}"]["r_finite"] and rec[f"bf16 {fb}"]["r_bad"] == 0.0
            assert rec[f"int8 {fb}"]["err"] < 0.02 and rec[f"int4 {fb}"]["err"] < 0.3
        same, err, broken = rec["after"]
        assert same and err < 0.02 and not broken, rec["after"]
    for key in recs[0]:
        if key != "after":
            assert len({rec[key]["digest"] for rec in recs}) == 1, f"{key}: ranks disagree"
