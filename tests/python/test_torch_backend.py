"""The "ringpress" torch.distributed backend, as real processes, checked against gloo in the same job.

Every rank creates the ringpress default group and a gloo group over the same ranks, runs each
op on both with the same inputs, and reports any difference; DDP trains the same model on both.
"""

from __future__ import annotations

import pytest
from ranks import run_ranks

pytest.importorskip("torch")

NO_COMM = {"RP_TEST_NO_COMM": "1"}

PRELUDE = """
import datetime, torch, torch.distributed as dist
import ringpress.torch as rt
dist.init_process_group(BACKEND, rank=rank, world_size=size, timeout=datetime.timedelta(seconds=TIMEOUT))
gloo = dist.new_group(backend="gloo")
bad = []
def same(name, a, b, exact):
    # bf16 rounds after every hop: orders of summation differ by a few units in the last place
    tol = {torch.bfloat16: (2e-2, 0.13), torch.float16: (4e-3, 0.03)}.get(a.dtype, (1e-5, 1e-6))
    ok = torch.equal(a, b) if exact else torch.allclose(a.double(), b.double(), rtol=tol[0], atol=tol[1])
    if not ok:
        bad.append(f"{name}: ringpress {a.flatten()[:6].tolist()} gloo {b.flatten()[:6].tolist()}")
"""


def prelude(backend: str = "ringpress", timeout: float = 30) -> str:
    return f"BACKEND = {backend!r}\nTIMEOUT = {timeout}\n" + PRELUDE


OPS_BODY = """
# Every rank can rebuild every rank's input (seeded by rank), so each op is checked against an
# exact reference computed here, and the ops gloo has are also run on gloo with the same inputs.
def inp(p, n, dtype, salt=0):
    g = torch.Generator().manual_seed(1000 * p + 7 * n + salt)
    if dtype == torch.bool:
        return torch.randint(0, 2, (n,), generator=g).bool()
    if dtype.is_complex:
        return torch.randn(n, generator=g, dtype=dtype)
    if dtype.is_floating_point:
        return (torch.randn(n, generator=g) * 3).to(dtype)
    lo, hi = (0, 100) if dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64) else (-50, 50)
    return torch.randint(lo, hi, (n,), generator=g).to(dtype)
exact = size <= 2  # two operands sum the same in any order; more may round differently
SIZES = (0, 1, 7, 65537)
FOLD = {"SUM": torch.add, "PRODUCT": torch.mul, "MIN": torch.minimum, "MAX": torch.maximum,
        "BAND": torch.bitwise_and, "BOR": torch.bitwise_or, "BXOR": torch.bitwise_xor}
def reference(opname, xs):
    if xs[0].dtype == torch.bool and opname in ("SUM", "MAX", "BOR"):
        opname = "BOR"
    elif xs[0].dtype == torch.bool and opname in ("PRODUCT", "MIN", "BAND"):
        opname = "BAND"
    acc = xs[0].clone()
    for x in xs[1:]:
        acc = FOLD[opname](acc, x).to(xs[0].dtype)
    return acc
REDUCE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
                 torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64)
for dtype in REDUCE_DTYPES:
    ops = ("SUM",) if dtype.is_complex else ("SUM", "MIN", "MAX", "PRODUCT")
    if not dtype.is_floating_point and not dtype.is_complex:
        ops += ("BAND", "BOR", "BXOR")
    for opname in ops:
        for n in SIZES:
            xs = [inp(p, n, dtype) for p in range(size)]
            if opname == "PRODUCT" and dtype.is_floating_point:
                xs = [1 + x / 100 for x in xs]
            if opname == "PRODUCT" and not dtype.is_floating_point and dtype != torch.bool:
                xs = [x % 3 for x in xs]  # keep integer products in range
            a = xs[rank].clone()
            dist.all_reduce(a, op=getattr(dist.ReduceOp, opname))
            ref = reference(opname, xs)
            floaty = dtype.is_floating_point or dtype.is_complex
            same(f"all_reduce {dtype} {opname} n={n}", a, ref, not floaty or exact or opname in ("MIN", "MAX"))
# gloo on the same inputs for what gloo reduces
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.int32, torch.int64, torch.uint8):
    for opname in ("SUM", "MIN", "MAX"):
        x = inp(rank, 1001, dtype, 1); a, b = x.clone(), x.clone()
        dist.all_reduce(a, op=getattr(dist.ReduceOp, opname)); dist.all_reduce(b, op=getattr(dist.ReduceOp, opname), group=gloo)
        same(f"all_reduce vs gloo {dtype} {opname}", a, b, exact or not dtype.is_floating_point or opname != "SUM")
# AVG: floats divide, integers truncate toward zero (C division) after summing
for dtype in (torch.float32, torch.int32):
    xs = [inp(p, 1001, dtype, 2) for p in range(size)]
    a = xs[rank].clone(); dist.all_reduce(a, op=dist.ReduceOp.AVG)
    tot = reference("SUM", xs)
    ref = tot / size if dtype.is_floating_point else torch.div(tot, size, rounding_mode="trunc").to(dtype)
    same(f"all_reduce AVG {dtype}", a, ref, not dtype.is_floating_point)
# PREMUL_SUM (what FSDP's gradient division uses)
xs = [inp(p, 513, torch.float32, 3) for p in range(size)]
a = xs[rank].clone()
dist.all_reduce(a, op=dist._make_nccl_premul_sum(0.5))
same("all_reduce PREMUL_SUM", a, reference("SUM", [x * 0.5 for x in xs]), False)
# async with a future; a non-contiguous tensor is written back
x = inp(rank, 4096, torch.float32, 4).reshape(64, 64).t()
a = x.clone().t().contiguous().t(); b = x.contiguous()
assert not a.is_contiguous()
w = dist.all_reduce(a, async_op=True)
fut = w.get_future()
w.wait()
dist.all_reduce(b, group=gloo)
same("async non-contiguous all_reduce", a, b, exact)
same("future value", fut.value()[0], b, exact)
same("work.result", w.result()[0], b, exact)
# byte movers: every dtype, sizes 0/1/odd/large, from the last rank
MOVE_DTYPES = (torch.float32, torch.bfloat16, torch.bool, torch.int8, torch.int16, torch.complex64,
               torch.float8_e4m3fn, torch.uint16)
def movable(p, n, dtype, salt):
    if dtype == torch.float8_e4m3fn:
        return inp(p, n, torch.float32, salt).to(dtype)
    return inp(p, n, dtype, salt)
def eq(name, a, b):
    ok = torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.numel() else a.shape == b.shape
    if not ok:
        bad.append(f"{name}: ringpress {a.flatten()[:4]} want {b.flatten()[:4]}")
for dtype in MOVE_DTYPES:
    for n in SIZES:
        root = size - 1
        a = movable(rank, n, dtype, 5) if rank == root else torch.zeros(n, dtype=dtype)
        dist.broadcast(a, src=root)
        eq(f"broadcast {dtype} n={n}", a, movable(root, n, dtype, 5))
        x = movable(rank, n, dtype, 6)
        la = [torch.zeros(n, dtype=dtype) for _ in range(size)]
        dist.all_gather(la, x)
        for p in range(size):
            eq(f"all_gather {dtype} n={n} from {p}", la[p], movable(p, n, dtype, 6))
        o = torch.zeros(size * n, dtype=dtype)
        dist.all_gather_into_tensor(o, x)
        eq(f"all_gather_into_tensor {dtype} n={n}", o, torch.cat([movable(p, n, dtype, 6) for p in range(size)]))
        gl = [torch.zeros(n, dtype=dtype) for _ in range(size)] if rank == 0 else None
        dist.gather(x, gl, dst=0)
        if rank == 0:
            for p in range(size):
                eq(f"gather {dtype} n={n} from {p}", gl[p], movable(p, n, dtype, 6))
        src = [movable(p, n, dtype, 7) for p in range(size)] if rank == root else None
        s = torch.zeros(n, dtype=dtype)
        dist.scatter(s, src, src=root)
        eq(f"scatter {dtype} n={n}", s, movable(rank, n, dtype, 7))
        # all_to_all_single, even: rank p sends block q of its input to q
        xin = movable(rank, size * n, dtype, 8)
        out = torch.zeros(size * n, dtype=dtype)
        dist.all_to_all_single(out, xin)
        want = torch.cat([movable(p, size * n, dtype, 8)[rank * n:(rank + 1) * n] for p in range(size)])
        eq(f"all_to_all_single {dtype} n={n}", out, want)
# all_to_all_single with uneven splits: rank p sends (p + q) % 3 rows of 5 to rank q
def splits(p):
    return [(p + q) % 3 for q in range(size)]
xin = torch.arange(sum(splits(rank)) * 5, dtype=torch.float64).reshape(-1, 5) + 1000 * rank
recv = [splits(p)[rank] for p in range(size)]
out = torch.zeros(sum(recv), 5, dtype=torch.float64)
dist.all_to_all_single(out, xin, output_split_sizes=recv, input_split_sizes=splits(rank))
parts = []
for p in range(size):
    sp = splits(p); off = sum(sp[:rank])
    parts.append((torch.arange(sum(sp) * 5, dtype=torch.float64).reshape(-1, 5) + 1000 * p)[off:off + sp[rank]])
eq("all_to_all_single uneven", out, torch.cat(parts))
# all_to_all (lists of different sizes per peer)
ins = [torch.full((q + 1,), rank * 10 + q, dtype=torch.int16) for q in range(size)]
outs = [torch.zeros(rank + 1, dtype=torch.int16) for _ in range(size)]
dist.all_to_all(outs, ins)
for p in range(size):
    eq(f"all_to_all from {p}", outs[p], torch.full((rank + 1,), p * 10 + rank, dtype=torch.int16))
# non-contiguous byte movers
x = torch.arange(24, dtype=torch.float32).reshape(4, 6).t() + rank
la = [torch.zeros(4, 6).t() for _ in range(size)]
dist.all_gather(la, x)
for p in range(size):
    eq(f"all_gather non-contiguous {p}", la[p].contiguous(), (torch.arange(24, dtype=torch.float32).reshape(4, 6).t() + p).contiguous())
# point-to-point in a ring: send/recv with tags, then batch_isend_irecv both ways (4 MiB each,
# more than a socket buffer holds: posted together they cannot deadlock)
if size > 1:
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    r = torch.zeros(3, dtype=torch.bfloat16)
    if rank % 2 == 0:
        dist.send(torch.full((3,), rank, dtype=torch.bfloat16), nxt, tag=5); dist.recv(r, prv, tag=5)
    else:
        dist.recv(r, prv, tag=5); dist.send(torch.full((3,), rank, dtype=torch.bfloat16), nxt, tag=5)
    eq("send/recv", r, torch.full((3,), prv, dtype=torch.bfloat16))
    big = 1 << 20
    ra, rb = torch.zeros(big), torch.zeros(big)
    reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, torch.full((big,), float(rank)), nxt),
                                   dist.P2POp(dist.isend, torch.full((big,), -float(rank)), prv),
                                   dist.P2POp(dist.irecv, ra, prv), dist.P2POp(dist.irecv, rb, nxt)])
    for q in reqs:
        q.wait()
    eq("batch_isend_irecv from prev", ra, torch.full((big,), float(prv)))
    eq("batch_isend_irecv from next", rb, torch.full((big,), -float(nxt)))
# reduce_scatter (list) and reduce_scatter_tensor, vs gloo
xs = [inp(rank, 9, torch.float32, 9 + q) for q in range(size)]
ra, rb = torch.empty(9), torch.empty(9)
dist.reduce_scatter(ra, [t.clone() for t in xs]); dist.reduce_scatter(rb, [t.clone() for t in xs], group=gloo)
same("reduce_scatter", ra, rb, exact)
flat = torch.cat(xs)
ra, rb = torch.empty(9), torch.empty(9)
dist.reduce_scatter_tensor(ra, flat.clone()); dist.reduce_scatter_tensor(rb, flat.clone(), group=gloo)
same("reduce_scatter_tensor", ra, rb, exact)
for dtype in (torch.int8, torch.float16):
    for n in (0, 1, 7):
        xs = [inp(p, size * n, dtype, 10) for p in range(size)]
        o = torch.zeros(n, dtype=dtype)
        dist.reduce_scatter_tensor(o, xs[rank].clone())
        same(f"reduce_scatter_tensor {dtype} n={n}", o, reference("SUM", xs)[rank * n:(rank + 1) * n],
             exact or not dtype.is_floating_point)
# the coalesced forms torch's _coalescing_manager (FSDP) calls on the group
pg = dist.distributed_c10d._get_default_group()
ins = [inp(rank, 5, torch.float32, 11), inp(rank, 12, torch.float32, 12)]
outs = [torch.empty(5 * size), torch.empty(12 * size)]
pg.allgather_into_tensor_coalesced(outs, ins).wait()
for i, o in zip(ins, outs):
    ref = torch.empty(i.numel() * size); dist.all_gather_into_tensor(ref, i, group=gloo)
    same("allgather_into_tensor_coalesced", o, ref, True)
ins = [inp(rank, 3 * size, torch.float32, 13), inp(rank, 8 * size, torch.float32, 14)]
outs = [torch.empty(3), torch.empty(8)]
pg.reduce_scatter_tensor_coalesced(outs, [t.clone() for t in ins]).wait()
for i, o in zip(ins, outs):
    ref = torch.empty(o.numel()); dist.reduce_scatter_tensor(ref, i.clone(), group=gloo)
    same("reduce_scatter_tensor_coalesced", o, ref, exact)
# reduce to the last rank (only the root's result is defined), several sizes
for n in SIZES:
    xs = [inp(p, n, torch.float32, 15) for p in range(size)]
    a = xs[rank].clone()
    dist.reduce(a, dst=size - 1)
    if rank == size - 1:
        same(f"reduce root n={n}", a, reference("SUM", xs), exact)
# PREMUL_SUM reduce: the root gets the scaled sum, the other ranks keep their input
xs = [inp(p, 33, torch.float32, 16) for p in range(size)]
a = xs[rank].clone()
dist.reduce(a, dst=0, op=dist._make_nccl_premul_sum(0.5))
if rank == 0:
    same("reduce PREMUL_SUM root", a, reference("SUM", [x * 0.5 for x in xs]), False)
else:
    eq("reduce PREMUL_SUM keeps the input", a, xs[rank])
dist.barrier()
emit({"bad": bad, "name": dist.get_backend(), "cls": type(pg._get_backend(torch.device("cpu"))).__name__,
      "native": rt.NATIVE, "ops": rt.stats()["ops"]})
dist.destroy_process_group()
"""


@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_ops_match_gloo(nranks):
    res = run_ranks(nranks, prelude() + OPS_BODY, env=NO_COMM, timeout=120)
    for r in res:
        rec = r.records[-1]
        assert rec["bad"] == [], f"rank {r.rank}: {rec['bad']}"
        assert rec["name"] == "ringpress"
        assert rec["native"] and rec["cls"] == "ProcessGroupRingpress"
        assert rec["ops"] > 100  # the ops ran on ringpress, not on a fallback


ERRORS_BODY = """
import ringpress
caught = {}
def attempt(name, fn):
    try:
        fn()
        caught[name] = None
    except ringpress.UsageError as e:
        caught[name] = (type(e).__name__, str(e), e.rank, e.op)
attempt("band", lambda: dist.all_reduce(torch.ones(3, dtype=torch.float32), op=dist.ReduceOp.BAND))
attempt("bool_avg", lambda: dist.all_reduce(torch.ones(3, dtype=torch.bool), op=dist.ReduceOp.AVG))
attempt("float8_sum", lambda: dist.all_reduce(torch.ones(3).to(torch.float8_e4m3fn)))
attempt("recv_anysource", lambda: dist.recv(torch.ones(3)))
attempt("gather_size", lambda: dist.all_gather_into_tensor(torch.empty(5), torch.ones(3)))
attempt("uneven_splits", lambda: dist.all_to_all_single(torch.empty(4), torch.ones(4), [1] * size, [3] + [0] * (size - 1)))
attempt("async_wait", lambda: dist.all_reduce(torch.ones(3), op=dist.ReduceOp.BAND, async_op=True))
# the group is still usable after refused calls (nothing was started)
t = torch.ones(4); dist.all_reduce(t)
emit({"caught": caught, "after": t.tolist()})
dist.destroy_process_group()
"""


def test_unsupported_ops_and_dtypes_raise_usage_errors():
    res = run_ranks(2, prelude() + ERRORS_BODY, env=NO_COMM, timeout=60)
    for r in res:
        rec = r.records[-1]
        for name, got in rec["caught"].items():
            assert got is not None, f"rank {r.rank}: {name} did not raise"
            cls, msg, erank, _ = got
            assert cls == "UsageError" and f"rank {r.rank}" in msg and erank == r.rank, got
        assert "needs an integer or bool tensor" in rec["caught"]["band"][1]
        assert "all_reduce" in rec["caught"]["band"][3]
        assert (
            "Float8" in rec["caught"]["float8_sum"][1] or "float8" in rec["caught"]["float8_sum"][1]
        )
        assert "name the source rank" in rec["caught"]["recv_anysource"][1]
        assert "splits must add up" in rec["caught"]["uneven_splits"][1]
        assert rec["after"] == [2.0] * 4


MIXED_BODY = """
pg = dist.distributed_c10d._get_default_group()
kinds = {d: type(pg._get_backend(torch.device(d))).__name__ for d in ("cpu", "cuda")}
rp_dev = [d for d, k in kinds.items() if k == "ProcessGroupRingpress"][0]
ops0 = rt.backend(device=rp_dev).stats()["ops"]
t = torch.arange(6, dtype=torch.float32) + rank
dist.all_reduce(t)
ops1 = rt.backend(device=rp_dev).stats()["ops"]
emit({"kinds": kinds, "ops": [ops0, ops1], "t": t.tolist()})
dist.destroy_process_group()
"""


@pytest.mark.parametrize(
    "spec,cpu_on_ringpress",
    [
        ("cpu:ringpress,cuda:gloo", True),
        ("cuda:gloo,cpu:ringpress", True),
        ("cpu:gloo,cuda:ringpress", False),
    ],
)
def test_mixed_backend_strings_route_by_device(spec, cpu_on_ringpress):
    # torch builds and routes the per-device backends itself (no private frames read).
    res = run_ranks(2, prelude(spec) + MIXED_BODY, env=NO_COMM, timeout=60)
    want = [float(2 * i + 1) for i in range(6)]
    for r in res:
        rec = r.records[-1]
        assert rec["t"] == want
        ops0, ops1 = rec["ops"]
        if cpu_on_ringpress:
            assert rec["kinds"] == {"cpu": "ProcessGroupRingpress", "cuda": "ProcessGroupGloo"}
            assert ops1 == ops0 + 1
        else:
            assert rec["kinds"] == {"cpu": "ProcessGroupGloo", "cuda": "ProcessGroupRingpress"}
            assert ops1 == ops0  # the CPU tensor went to gloo


DDP_BODY = """
import io
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 8))
def train(group, steps=6):
    m = model()
    ddp = torch.nn.parallel.DistributedDataParallel(m, process_group=group, bucket_cap_mb=0.004)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        x = torch.randn(16, 32, generator=g)
        loss = ddp(x).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    return torch.cat([p.detach().flatten() for p in m.parameters()])
a = train(None)
b = train(gloo)
init = torch.cat([p.detach().flatten() for p in model().parameters()])
emit({"exact": bool(torch.equal(a, b)), "maxdiff": float((a - b).abs().max()), "moved": float((a - init).abs().max()),
      "sum": float(a.double().sum())})
dist.destroy_process_group()
"""


@pytest.mark.parametrize("nranks", [2, 3])
def test_ddp_trains_like_gloo(nranks):
    res = run_ranks(nranks, prelude() + DDP_BODY, env=NO_COMM, timeout=120)
    sums = {r.records[-1]["sum"] for r in res}
    assert len(sums) == 1, "ranks ended with different parameters"
    for r in res:
        rec = r.records[-1]
        assert rec["moved"] > 1e-3  # training changed the parameters
        if nranks == 2:
            assert rec["exact"], rec
        else:
            assert rec["maxdiff"] < 1e-5, rec
