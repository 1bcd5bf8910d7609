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
    tol = (2e-2, 0.13) if a.dtype == torch.bfloat16 else (1e-5, 1e-6)
    ok = torch.equal(a, b) if exact else torch.allclose(a.double(), b.double(), rtol=tol[0], atol=tol[1])
    if not ok:
        bad.append(f"{name}: ringpress {a.flatten()[:6].tolist()} gloo {b.flatten()[:6].tolist()}")
"""


def prelude(backend: str = "ringpress", timeout: float = 30) -> str:
    return f"BACKEND = {backend!r}\nTIMEOUT = {timeout}\n" + PRELUDE


OPS_BODY = """
g = torch.Generator().manual_seed(1234 + rank)
exact = size <= 2  # two operands sum the same in any order; more may round differently
def rnd(n, dtype):
    if dtype.is_floating_point:
        return (torch.randn(n, generator=g) * 3).to(dtype)
    return torch.randint(-50, 50, (n,), generator=g).to(dtype)
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.int32, torch.int64, torch.uint8):
    for opname in ("SUM", "MIN", "MAX", "PRODUCT"):
        if dtype == torch.uint8 and opname != "MAX":
            continue
        for n in (0, 1, 7, 1000, 65537):
            x = rnd(n, dtype)
            if opname == "PRODUCT" and dtype.is_floating_point:
                x = 1 + x / 100
            a, b = x.clone(), x.clone()
            op = getattr(dist.ReduceOp, opname)
            dist.all_reduce(a, op=op)
            dist.all_reduce(b, op=op, group=gloo)
            same(f"all_reduce {dtype} {opname} n={n}", a, b, exact or not dtype.is_floating_point or opname in ("MIN", "MAX"))
# bitwise ops on integers (gathered and combined by the backend)
for dtype in (torch.int32, torch.int64, torch.uint8):
    for opname in ("BAND", "BOR", "BXOR"):
        x = torch.randint(0, 255, (1001,), generator=g).to(dtype)
        a, b = x.clone(), x.clone()
        op = getattr(dist.ReduceOp, opname)
        dist.all_reduce(a, op=op)
        dist.all_reduce(b, op=op, group=gloo)
        same(f"all_reduce {dtype} {opname}", a, b, True)
# AVG (gloo has none): against gloo's SUM / size
x = rnd(1001, torch.float32); a, b = x.clone(), x.clone()
dist.all_reduce(a, op=dist.ReduceOp.AVG); dist.all_reduce(b, group=gloo)
same("all_reduce AVG", a, b / size, False)
# async with a future; a non-contiguous tensor is written back
x = rnd(4096, torch.float32).reshape(64, 64).t(); a, b = x.clone().t().contiguous().t(), x.contiguous()
w = dist.all_reduce(a, async_op=True)
fut = w.get_future()
w.wait()
dist.all_reduce(b, group=gloo)
same("async non-contiguous all_reduce", a, b, exact)
same("future value", fut.value()[0], b, exact)
# broadcast from the last rank, several dtypes
for dtype in (torch.float32, torch.int64, torch.bfloat16):
    a = rnd(333, dtype); b = a.clone()
    dist.broadcast(a, src=size - 1); dist.broadcast(b, src=size - 1, group=gloo)
    same(f"broadcast {dtype}", a, b, True)
# all_gather (list) and all_gather_into_tensor
x = rnd(17, torch.float32)
la = [torch.empty(17) for _ in range(size)]; lb = [torch.empty(17) for _ in range(size)]
dist.all_gather(la, x); dist.all_gather(lb, x, group=gloo)
same("all_gather", torch.stack(la), torch.stack(lb), True)
oa, ob = torch.empty(size * 17), torch.empty(size * 17)
dist.all_gather_into_tensor(oa, x); dist.all_gather_into_tensor(ob, x, group=gloo)
same("all_gather_into_tensor", oa, ob, True)
# reduce_scatter (list) and reduce_scatter_tensor
xs = [rnd(9, torch.float32) for _ in range(size)]
ra, rb = torch.empty(9), torch.empty(9)
dist.reduce_scatter(ra, [t.clone() for t in xs]); dist.reduce_scatter(rb, [t.clone() for t in xs], group=gloo)
same("reduce_scatter", ra, rb, exact)
flat = torch.cat(xs)
ra, rb = torch.empty(9), torch.empty(9)
dist.reduce_scatter_tensor(ra, flat.clone()); dist.reduce_scatter_tensor(rb, flat.clone(), group=gloo)
same("reduce_scatter_tensor", ra, rb, exact)
# the coalesced forms torch's _coalescing_manager (FSDP) calls on the group
pg = dist.distributed_c10d._get_default_group()
ins = [rnd(5, torch.float32), rnd(12, torch.float32)]
outs = [torch.empty(5 * size), torch.empty(12 * size)]
pg.allgather_into_tensor_coalesced(outs, ins).wait()
for i, o in zip(ins, outs):
    ref = torch.empty(i.numel() * size); dist.all_gather_into_tensor(ref, i, group=gloo)
    same("allgather_into_tensor_coalesced", o, ref, True)
ins = [rnd(3 * size, torch.float32), rnd(8 * size, torch.float32)]
outs = [torch.empty(3), torch.empty(8)]
pg.reduce_scatter_tensor_coalesced(outs, [t.clone() for t in ins]).wait()
for i, o in zip(ins, outs):
    ref = torch.empty(o.numel()); dist.reduce_scatter_tensor(ref, i.clone(), group=gloo)
    same("reduce_scatter_tensor_coalesced", o, ref, exact)
# reduce to rank 1 (non-roots keep their input, as gloo's do not promise anything else: check root)
x = rnd(100, torch.float32); a, b = x.clone(), x.clone()
dist.reduce(a, dst=1 % size); dist.reduce(b, dst=1 % size, group=gloo)
if rank == 1 % size:
    same("reduce root", a, b, exact)
dist.barrier()
pg = dist.distributed_c10d._get_default_group()
emit({"bad": bad, "name": pg.getBackendName(), "ops": pg.comm.stats()["ops"]})
dist.destroy_process_group()
"""


@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_ops_match_gloo(nranks):
    res = run_ranks(nranks, prelude() + OPS_BODY, env=NO_COMM, timeout=120)
    for r in res:
        rec = r.records[-1]
        assert rec["bad"] == [], f"rank {r.rank}: {rec['bad']}"
        assert rec["name"] == "ringpress"
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
attempt("int16", lambda: dist.all_reduce(torch.ones(3, dtype=torch.int16)))
attempt("bool", lambda: dist.broadcast(torch.ones(3, dtype=torch.bool), src=0))
attempt("send", lambda: dist.send(torch.ones(3), dst=(rank + 1) % size))
attempt("gather_size", lambda: dist.all_gather_into_tensor(torch.empty(5), torch.ones(3)))
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
        assert "bitwise ops need integer tensors" in rec["caught"]["band"][1]
        assert "int16" in rec["caught"]["int16"][1]
        assert rec["after"] == [2.0] * 4


MIXED_BODY = """
pg = dist.distributed_c10d._get_default_group()
rp_pg = pg if isinstance(pg, rt.ProcessGroupRingpress) else None
others = {k: type(v).__name__ for k, v in rt.device_backends(pg).items()} if rp_pg else {}
ops0 = rp_pg.comm.stats()["ops"] if rp_pg else None
t = torch.arange(6, dtype=torch.float32) + rank
dist.all_reduce(t)
ops1 = rp_pg.comm.stats()["ops"] if rp_pg else None
emit({"cls": type(pg).__name__, "others": others, "ops": [ops0, ops1], "t": t.tolist()})
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
    res = run_ranks(2, prelude(spec) + MIXED_BODY, env=NO_COMM, timeout=60)
    want = [float(2 * i + 1) for i in range(6)]
    for r in res:
        rec = r.records[-1]
        assert rec["cls"] == "ProcessGroupRingpress"
        assert rec["t"] == want
        ops0, ops1 = rec["ops"]
        if cpu_on_ringpress:
            assert rec["others"] == {"cuda": "ProcessGroupGloo"}
            assert ops1 == ops0 + 1
        else:
            assert rec["others"] == {"cpu": "ProcessGroupGloo"}
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
