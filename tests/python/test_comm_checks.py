"""Argument and cross-rank checks (issue 16): byte order, rooted ops whose ranks disagree on the
root, coalesced allreduces split differently, refused calls that must leave the communicator
usable, and timeouts that must name the rank that stopped calling. Real rank processes over the
real transports (tests/python/ranks.py)."""

from __future__ import annotations

import pytest
from ranks import run_ranks

NO_COMM = {"RP_TEST_NO_COMM": "1"}


def _records(res):
    for r in res:
        assert r.records, f"rank {r.rank} rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return [r.records for r in res]


# ------------------------------------------------------------------ byte order

BYTE_ORDER = r"""
big = np.dtype(">f4")
calls = {
    "allreduce": lambda: comm.allreduce(np.ones(8, big)),
    "allreduce_lossless": lambda: comm.allreduce(np.ones(8, big), compression="lossless"),
    "allreduce_residual": lambda: comm.allreduce(
        np.ones(8, np.float32), compression="topk", residual=np.zeros(8, big)),
    "allreduce_coalesced": lambda: comm.allreduce_coalesced([np.ones(4, np.float32),
                                                             np.ones(4, big)]),
    "broadcast": lambda: comm.broadcast(np.ones(8, big)),
    "allgather": lambda: comm.allgather(np.ones(8, big)),
    "allgather_out": lambda: comm.allgather(np.ones(8, np.float32),
                                            out=np.zeros((size, 8), big)),
    "allgatherv": lambda: comm.allgatherv(np.ones(2, np.dtype(">i4")), [2] * size),
    "reduce_scatter": lambda: comm.reduce_scatter(np.ones(2 * size, np.dtype(">f8"))),
}
out = {}
for name, call in calls.items():
    try:
        call()
        out[name] = "no error"
    except rp.UsageError as e:
        out[name] = str(e)
# Nothing was queued or numbered: a valid collective works, with the right sum.
x = np.ones(4, np.float32) * (rank + 1)
comm.allreduce(x)
# Explicit little-endian ('<f4') is this host's native order and is accepted.
y = np.ones(4, np.dtype("<f4"))
comm.allreduce(y)
emit({"out": out, "x": x.tolist(), "y": y.tolist(), "broken": comm.broken,
      "seq": comm.stats()["ops"]})
"""


def test_non_native_byte_order_is_refused_everywhere_and_leaves_comm_usable():
    import sys

    assert sys.byteorder == "little"  # the tests below take '>' as the foreign order
    res = run_ranks(2, BYTE_ORDER, timeout=60)
    for recs in _records(res):
        rec = recs[0]
        for name, msg in rec["out"].items():
            assert "byte order" in msg, (name, msg)
        assert rec["x"] == [3.0] * 4
        assert rec["y"] == [2.0] * 4
        assert not rec["broken"]
        assert rec["seq"] == 2  # only the two valid calls ran


# ------------------------------------------------------------------ rooted ops, root mismatch

ROOT_MISMATCH = r"""
import time
kind, n = os.environ["RP_KIND"], int(os.environ["RP_N"])
roots = [int(v) for v in os.environ["RP_ROOTS"].split(",")]
x = np.full(n, float(rank), np.float32)
t0 = time.monotonic()
rec = {}
try:
    comm.broadcast(x, root=roots[rank])
    rec["error"] = None
except rp.RingpressError as e:
    rec.update(error=type(e).__name__, msg=str(e), rank=e.rank, peer=e.peer, op=e.op)
rec["after"] = time.monotonic() - t0
rec["broken"] = comm.broken
emit(rec)
"""


@pytest.mark.parametrize(
    "size,roots",
    [
        (2, "0,1"),  # both believe they are the root: neither receives anything
        (2, "1,0"),  # each believes the other is: both only receive
        (3, "0,1,0"),
        (4, "0,1,2,3"),
        (4, "3,3,3,0"),
        (3, "2,2,1"),
    ],
)
@pytest.mark.parametrize("n", [1000, 1 << 20])  # tree (4 KB) and pipelined chain (4 MiB)
def test_broadcast_root_mismatch_raises_at_that_op_on_every_rank(size, roots, n):
    res = run_ranks(
        size,
        ROOT_MISMATCH,
        timeout=90,
        check=False,
        env={"RP_KIND": "broadcast", "RP_N": n, "RP_ROOTS": roots},
        comm_kwargs={"timeout": 20},
    )
    for r, recs in enumerate(_records(res)):
        rec = recs[0]
        assert rec["error"] == "UsageError", rec
        assert "collective mismatch" in rec["msg"] and "root" in rec["msg"], rec
        assert rec["op"] == "broadcast" and rec["rank"] == r, rec
        assert 0 <= rec["peer"] < size, (
            rec
        )  # the peer that disagreed (or, via the abort, this rank)
        assert rec["after"] < 10, rec  # well inside the 20 s timeout: not a timeout
        assert rec["broken"]


def test_broadcast_with_agreeing_roots_still_works():
    body = r"""
for root in range(size):
    for n in (7, 1000, 1 << 20):
        x = np.full(n, float(rank * 10 + 1), np.float32)
        comm.broadcast(x, root=root)
        assert (x == root * 10 + 1).all(), (root, n)
comm.allreduce(np.ones(3, np.float32))
emit({"ok": True})
"""
    for recs in _records(run_ranks(3, body, timeout=90)):
        assert recs[0]["ok"]


TORCH_ROOTED = r"""
import datetime, time, torch, torch.distributed as dist
import ringpress.torch
dist.init_process_group("ringpress", rank=rank, world_size=size,
                        timeout=datetime.timedelta(seconds=20))
kind = os.environ["RP_KIND"]
roots = [int(v) for v in os.environ["RP_ROOTS"].split(",")]
root = roots[rank]
n = int(os.environ["RP_N"])
t = torch.full((n,), float(rank + 1))
t0 = time.monotonic()
rec = {}
try:
    if kind == "reduce":
        dist.reduce(t, dst=root)
    elif kind == "gather":
        dist.gather(t, [torch.empty(n) for _ in range(size)] if rank == root else None, dst=root)
    elif kind == "scatter":
        dist.scatter(t, [torch.full((n,), float(i)) for i in range(size)] if rank == root else None,
                     src=root)
    elif kind == "broadcast":
        dist.broadcast(t, src=root)
    rec["error"] = None
    rec["t"] = t[:2].tolist()
except Exception as e:
    rec.update(error=type(e).__name__, msg=str(e))
rec["after"] = time.monotonic() - t0
emit(rec)
try:
    dist.destroy_process_group()
except Exception:
    pass
"""


@pytest.mark.parametrize("kind", ["reduce", "gather", "scatter", "broadcast"])
def test_rooted_torch_ops_with_different_roots_raise_at_that_op(kind):
    pytest.importorskip("torch")
    res = run_ranks(
        3,
        TORCH_ROOTED,
        timeout=90,
        check=False,
        env={**NO_COMM, "RP_KIND": kind, "RP_ROOTS": "0,1,0", "RP_N": 1000},
    )
    for recs in _records(res):
        rec = recs[0]
        assert rec["error"] is not None, rec
        assert "collective mismatch" in rec["msg"] and "root" in rec["msg"], rec
        assert rec["after"] < 10, rec


@pytest.mark.parametrize("kind", ["reduce", "gather", "scatter"])
def test_rooted_torch_ops_with_one_root_give_the_right_result(kind):
    pytest.importorskip("torch")
    res = run_ranks(
        3,
        TORCH_ROOTED,
        timeout=90,
        check=False,
        env={**NO_COMM, "RP_KIND": kind, "RP_ROOTS": "2,2,2", "RP_N": 1000},
    )
    for r, recs in enumerate(_records(res)):
        rec = recs[0]
        assert rec["error"] is None, rec
        if kind == "reduce" and r == 2:
            assert rec["t"] == [6.0, 6.0]
        if kind == "scatter":
            assert rec["t"] == [float(r)] * 2


# ------------------------------------------------------------------ coalesced split

COALESCED = r"""
split = [int(v) for v in os.environ["RP_SPLIT" + str(rank)].split(",")]
xs = [np.full(k, float(rank + 1), np.float32) for k in split]
rec = {}
try:
    comm.allreduce_coalesced(xs)
    rec["error"] = None
    rec["sums"] = [float(x.sum()) for x in xs]
except rp.RingpressError as e:
    rec.update(error=type(e).__name__, msg=str(e), peer=e.peer, op=e.op)
emit(rec)
"""


@pytest.mark.parametrize(
    "splits",
    [
        ("3,5", "5,3"),  # same total, different split
        ("8", "4,4"),  # one tensor vs two
        ("1000,24", "24,1000"),
        ("300000,4", "4,300000"),  # ring path
    ],
)
def test_coalesced_split_mismatch_raises_on_every_rank(splits):
    env = {f"RP_SPLIT{r}": s for r, s in enumerate(splits)}
    res = run_ranks(2, COALESCED, timeout=60, check=False, env=env, comm_kwargs={"timeout": 20})
    for recs in _records(res):
        rec = recs[0]
        assert rec["error"] == "UsageError", rec
        assert "collective mismatch" in rec["msg"] and "split" in rec["msg"], rec
        assert rec["op"] == "allreduce_coalesced"


def test_coalesced_with_the_same_split_sums():
    env = {"RP_SPLIT0": "3,0,5,300000", "RP_SPLIT1": "3,0,5,300000", "RP_SPLIT2": "3,0,5,300000"}
    for recs in _records(run_ranks(3, COALESCED, timeout=60, env=env)):
        rec = recs[0]
        assert rec["error"] is None, rec
        assert rec["sums"] == [18.0, 0.0, 30.0, 1800000.0]


# ------------------------------------------------------------------ refused calls

REFUSED = r"""
bad = {
    "lossless level 99": lambda: comm.allreduce(np.ones(64, np.float32), compression="lossless",
                                                level=99),
    "lossless level -1000": lambda: comm.allreduce(np.ones(64, np.float32),
                                                   compression="lossless", level=-1000),
    "lz4 level 99": lambda: comm.allreduce(np.ones(64, np.float32), compression="lossless",
                                           codec="lz4", level=99),
    "unknown codec": lambda: comm.allreduce(np.ones(64, np.float32), compression="lossless",
                                            codec="brotli"),
    "unknown compression": lambda: comm.allreduce(np.ones(4, np.float32), compression="nope"),
    "int8 block 0": lambda: comm.allreduce(np.ones(64, np.float32), compression="int8", block=0),
    "topk ratio 2": lambda: comm.allreduce(np.ones(64, np.float32), compression="topk", ratio=2.0),
    "int8 on int32": lambda: comm.allreduce(np.ones(64, np.int32), compression="int8"),
    "auto with topk, no residual": lambda: comm.allreduce(np.ones(64, np.float32),
                                                         compression="auto", allow="topk"),
    "auto lossless level 99": lambda: comm.allreduce(np.ones(64, np.float32), compression="auto",
                                                     allow="lossless", level=99),
    "bad op": lambda: comm.allreduce(np.ones(4, np.float32), op="median"),
    "bool dtype": lambda: comm.allreduce(np.ones(4, np.bool_)),
    "read-only": lambda: comm.allreduce(np.frombuffer(b"\0" * 16, np.float32)),
    "non-contiguous": lambda: comm.allreduce(np.ones(8, np.float32)[::2]),
    "residual wrong size": lambda: comm.allreduce(np.ones(8, np.float32), compression="topk",
                                                  residual=np.zeros(4, np.float32)),
    "broadcast root": lambda: comm.broadcast(np.ones(4, np.float32), root=size),
    "broadcast root -1": lambda: comm.broadcast(np.ones(4, np.float32), root=-1),
    "allgather out": lambda: comm.allgather(np.ones(4, np.float32), out=np.zeros(3, np.float32)),
    "allgatherv counts": lambda: comm.allgatherv(np.ones(4, np.float32), [1] * size),
    "reduce_scatter split": lambda: comm.reduce_scatter(np.ones(size * 2 + 1, np.float32)),
    "coalesced dtypes": lambda: comm.allreduce_coalesced([np.ones(2, np.float32),
                                                          np.ones(2, np.float64)]),
    "coalesced empty": lambda: comm.allreduce_coalesced([]),
    "coalesced bool": lambda: comm.allreduce_coalesced([np.ones(2, np.bool_)]),
}
# Only this rank makes the refused calls: had any of them queued a request or spent a sequence
# number, the next collective would be a mismatch (or hang) on the other ranks.
refused = {}
if rank == int(os.environ["RP_BAD_RANK"]):
    for name, call in bad.items():
        try:
            call()
            refused[name] = "no error"
        except rp.UsageError as e:
            refused[name] = "UsageError"
        except Exception as e:
            refused[name] = f"{type(e).__name__}: {e}"
        assert not comm.broken, name
x = np.full(1000, float(rank + 1), np.float32)
comm.allreduce(x)
y = np.full(1000, float(rank + 1), np.float32)
comm.allreduce(y, compression="lossless", level=3)
emit({"refused": refused, "x": float(x[0]), "y": float(y[0]), "broken": comm.broken,
      "ops": comm.stats()["ops"]})
"""


def test_refused_calls_leave_the_communicator_usable_on_every_rank():
    res = run_ranks(
        3, REFUSED, timeout=90, check=False, env={"RP_BAD_RANK": 1}, comm_kwargs={"timeout": 20}
    )
    recs = _records(res)
    refused = recs[1][0]["refused"]
    assert len(refused) >= 20
    assert all(v == "UsageError" for v in refused.values()), refused
    for r in range(3):
        rec = recs[r][0]
        assert rec["x"] == 6.0 and rec["y"] == 6.0, rec
        assert not rec["broken"]
        assert rec["ops"] == 2


# ------------------------------------------------------------------ timeout attribution

SILENT = r"""
import time
silent = int(os.environ["RP_SILENT"])
reps = int(os.environ["RP_REPS"])
T = float(os.environ["RP_T"])
gaveup = os.environ["RP_GAVEUP_DIR"]
store = comm._store  # the job's store (rank 0 hosts it); one new communicator per repetition
sizes = [10, 1 << 18]   # recursive doubling (small) and the ring
for i in range(reps):
    c = rp.Communicator.from_store(store, rank, size, timeout=T, prefix=f"silent/{i}")
    n = sizes[i % len(sizes)]
    x = np.ones(n, np.float32)
    c.allreduce(x)           # every rank healthy first
    rec = {"i": i, "n": n}
    if rank == silent:
        # Alive but silent: not in any collective (and not on the network) until the others
        # have given up. Each of them leaves a file once its allreduce has returned or raised;
        # T + 3 s at most, the fixed wait this used to be.
        deadline = time.monotonic() + T + 3.0
        marks = [os.path.join(gaveup, f"{i}.{q}") for q in range(size) if q != silent]
        while not all(map(os.path.exists, marks)) and time.monotonic() < deadline:
            time.sleep(0.02)
        rec["silent"] = True
    else:
        t0 = time.monotonic()
        try:
            c.allreduce(x)
            rec["error"] = None
        except rp.RingpressError as e:
            rec.update(error=type(e).__name__, peer=e.peer, msg=str(e)[:400])
        rec["after"] = time.monotonic() - t0
        open(os.path.join(gaveup, f"{i}.{rank}"), "w").close()
    emit(rec)
    try:
        c.close()
    except rp.RingpressError:
        pass
    store.add(f"silent/done/{i}", 1)
    while store.add(f"silent/done/{i}", 0) < size:
        time.sleep(0.05)
"""


@pytest.mark.parametrize("size,silent", [(3, 2), (4, 1), (4, 3)])
def test_timeout_names_the_rank_that_stopped_calling(size, silent, tmp_path):
    reps, T = 5, 1.5  # 15 silent-rank rounds over the three cases
    res = run_ranks(
        size,
        SILENT,
        timeout=reps * (T + 8) + 60,
        check=False,
        env={"RP_SILENT": silent, "RP_REPS": reps, "RP_T": T, "RP_GAVEUP_DIR": tmp_path},
    )
    recs = _records(res)
    wrong = []
    for r in range(size):
        assert len(recs[r]) == reps, (r, recs[r])
        if r == silent:
            continue
        for rec in recs[r]:
            assert rec["error"] == "TimeoutError", rec
            assert rec["after"] < T + 3, rec
            if rec["peer"] != silent:
                wrong.append((r, rec))
    assert not wrong, wrong
