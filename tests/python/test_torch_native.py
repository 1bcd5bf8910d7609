"""The native torch backend (ringpress._c10d) as torch's own machinery meets it: groups and their
names, destroy and re-init, the profiler, torch.compile over functional collectives, FSDP2,
timeouts set through torch, and errors on every rank. Real processes; gloo is the reference."""

from __future__ import annotations

import pytest
from ranks import run_ranks

torch = pytest.importorskip("torch")

NO_COMM = {"RP_TEST_NO_COMM": "1"}

PRELUDE = """
import datetime, time, torch, torch.distributed as dist
import ringpress, ringpress.torch as rt
def init(backend="ringpress", timeout=30, **kw):
    dist.init_process_group(backend, rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=timeout), **kw)
"""


def test_native_module_is_built_for_this_torch():
    import ringpress.torch as rt

    assert rt.NATIVE, rt.WHY_NOT_NATIVE
    from ringpress import _c10d

    assert _c10d.torch_version == torch.__version__


SUBGROUPS = """
init()
world = dist.group.WORLD
names = {"world": world.group_name}
sub = dist.new_group([0, 2], backend="ringpress")
t = torch.full((5,), float(rank + 1))
if rank in (0, 2):
    names["sub"] = sub.group_name
    dist.all_reduce(t, group=sub)
sub_result = t.tolist()
dist.destroy_process_group(sub)  # every rank (torch wants it), members and not
w = torch.ones(3); dist.all_reduce(w)
# a new default group after destroying the old one, on a new store
store = dist.distributed_c10d._get_default_store()
if rank == 0:
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    store.set("port2", str(port))
port = int(store.get("port2"))
dist.barrier()
dist.destroy_process_group()
dist.init_process_group("ringpress", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
again = torch.full((2,), float(rank)); dist.all_reduce(again)
emit({"names": names, "sub": sub_result, "world": w.tolist(), "again": again.tolist(),
      "cls": type(dist.group.WORLD._get_backend(torch.device("cpu"))).__name__})
dist.destroy_process_group()
"""


def test_subgroups_names_destroy_and_reinit():
    res = run_ranks(3, PRELUDE + SUBGROUPS, env=NO_COMM, timeout=90)
    for r in res:
        rec = r.records[-1]
        assert rec["names"]["world"]
        if r.rank in (0, 2):
            assert rec["names"]["sub"] and rec["names"]["sub"] != rec["names"]["world"]
            assert rec["sub"] == [4.0] * 5  # ranks 0 and 2: 1 + 3
        else:
            assert rec["sub"] == [2.0] * 5  # not a member: untouched
        assert rec["world"] == [3.0] * 3
        assert rec["again"] == [3.0, 3.0]  # 0 + 1 + 2 on the re-made default group
        assert rec["cls"] == "ProcessGroupRingpress"


PROFILER = """
init()
from torch.profiler import ProfilerActivity, profile
with profile(activities=[ProfilerActivity.CPU]) as prof:
    dist.all_reduce(torch.ones(64))
    out = [torch.empty(8) for _ in range(size)]; dist.all_gather(out, torch.ones(8))
    dist.broadcast(torch.ones(4), src=0)
    w = dist.all_reduce(torch.ones(16), async_op=True); w.wait()
names = sorted({e.name for e in prof.events() if "ringpress" in e.name})
emit({"names": names})
dist.destroy_process_group()
"""


def test_profiler_lists_ringpress_ops():
    res = run_ranks(2, PRELUDE + PROFILER, env=NO_COMM, timeout=60)
    for r in res:
        names = r.records[-1]["names"]
        for op in ("ringpress:all_reduce", "ringpress:all_gather", "ringpress:broadcast"):
            assert op in names, names


COMPILE = """
init()
import torch.distributed._functional_collectives as funcol
def f(x):
    y = funcol.all_reduce(x * 2, "sum", dist.group.WORLD)
    z = funcol.all_gather_tensor(y + 1, 0, dist.group.WORLD)
    return funcol.reduce_scatter_tensor(z, "sum", 0, dist.group.WORLD)
x = torch.arange(4, dtype=torch.float32) + rank
compiled = torch.compile(f, fullgraph=True)  # inductor, torch's default
got = compiled(x)
want = f(x)
emit({"got": got.tolist(), "want": want.tolist()})
dist.destroy_process_group()
"""


def test_torch_compile_with_functional_collectives():
    res = run_ranks(2, PRELUDE + COMPILE, env=NO_COMM, timeout=180)
    for r in res:
        rec = r.records[-1]
        # y = 2x summed over ranks: 2(0+1), 2(1+2), ...; z = gathered y+1; reduce-scatter sums
        # the two identical halves.
        y = [2 * (2 * i + 1) for i in range(4)]
        assert rec["got"] == rec["want"] == [2 * (v + 1) for v in y]


FSDP = """
init(BACKEND)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
mesh = init_device_mesh("cpu", (size,))
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                        torch.nn.Linear(32, 4))
for layer in m:
    if isinstance(layer, torch.nn.Linear):
        fully_shard(layer, mesh=mesh)
fully_shard(m, mesh=mesh)
opt = torch.optim.SGD(m.parameters(), lr=0.1)
g = torch.Generator().manual_seed(rank)
for _ in range(4):
    x = torch.randn(8, 16, generator=g)
    loss = m(x).square().mean()
    opt.zero_grad(); loss.backward(); opt.step()
full = torch.cat([p.full_tensor().detach().flatten() for p in m.parameters()])
emit({"params": full.tolist()})
dist.destroy_process_group()
"""


def test_fsdp2_trains_like_gloo():
    runs = {}
    for backend in ("ringpress", "gloo"):
        res = run_ranks(2, f"BACKEND = {backend!r}\n" + PRELUDE + FSDP, env=NO_COMM, timeout=120)
        runs[backend] = [r.records[-1]["params"] for r in res]
    assert runs["ringpress"][0] == runs["ringpress"][1]  # ranks agree
    a, b = torch.tensor(runs["ringpress"][0]), torch.tensor(runs["gloo"][0])
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # two ranks: sums are exact
    init = torch.nn.Linear(16, 32)  # the parameters moved: training happened
    assert not torch.equal(a[: init.weight.numel()], torch.zeros(init.weight.numel()))


TIMEOUT = """
init(timeout=60)
dist.all_reduce(torch.ones(2))
# torch's _set_pg_timeout only looks for gloo/nccl types; the backend's own method (same name
# as theirs) sets it.
rt.backend()._set_default_timeout(datetime.timedelta(seconds=1))
assert rt.backend().timeout == datetime.timedelta(seconds=1)
if rank == 1:
    time.sleep(4)
t0 = time.monotonic()
err = None
try:
    dist.all_reduce(torch.ones(2))
except ringpress.RingpressError as e:
    err = (type(e).__name__, str(e), e.rank, e.op)
emit({"err": err, "after": time.monotonic() - t0})
"""


def test_a_timeout_set_through_the_backend_applies_to_the_next_op():
    res = run_ranks(2, PRELUDE + TIMEOUT, env=NO_COMM, timeout=60, check=False)
    rec = res[0].records[-1]
    assert rec["err"] is not None, res[0].stderr[-2000:]
    name, msg, erank, op = rec["err"]
    assert name == "TimeoutError" and erank == 0 and "rank 0" in msg, rec
    assert "allreduce" in op or "all_reduce" in op, rec
    assert rec["after"] < 3.5, rec  # 1 s timeout, not the group's 60 s


DEAD_PEER = """
init(timeout=60)
dist.all_reduce(torch.ones(4))
if rank == 2:
    import os
    os._exit(17)
t0 = time.monotonic()
caught = via_future = None
try:
    for _ in range(100):
        if rank == 0:  # rank 0 waits through the future (torch's error types), rank 1 on the op
            fut = dist.all_reduce(torch.ones(1 << 16), async_op=True).get_future()
            try:
                fut.wait()
            except ringpress.RingpressError:
                raise
            except Exception as e:
                via_future = (type(e).__name__, str(e)[:300])
                break
        else:
            dist.all_reduce(torch.ones(1 << 16))
        time.sleep(0.01)
except ringpress.RingpressError as e:
    caught = (type(e).__name__, str(e), e.rank, e.peer, e.op)
emit({"caught": caught, "via_future": via_future, "after": time.monotonic() - t0})
"""


def test_a_dead_peer_raises_a_typed_error_on_every_rank():
    res = run_ranks(3, PRELUDE + DEAD_PEER, env=NO_COMM, timeout=60, check=False)
    assert res[2].returncode == 17
    for r in res[:2]:
        assert r.records, r.stderr[-2000:]
        rec = r.records[-1]
        if rec["via_future"] is not None:  # a future hands on torch's type, ringpress's text
            name, msg = rec["via_future"]
            assert name == "DistNetworkError" and msg.startswith("TransportError: "), rec
            assert f"rank {r.rank}" in msg, rec
            continue
        assert rec["caught"] is not None, rec
        name, msg, erank, peer, op = rec["caught"]
        assert name == "TransportError" and erank == r.rank, rec
        assert peer in (-1, 2), rec  # the dead rank, when the error knows which
        assert "allreduce" in op or "all_reduce" in op, rec
        assert f"rank {r.rank}" in msg and "peer" in msg, rec
        assert rec["after"] < 20, rec  # detected, not waited out (the timeout is 60 s)


MISMATCH = """
init(timeout=60)
t0 = time.monotonic()
caught = None
try:
    if rank == 0:
        dist.all_reduce(torch.ones(8))
    else:
        dist.broadcast(torch.ones(8), src=0)
except ringpress.RingpressError as e:
    caught = (type(e).__name__, str(e), e.rank)
emit({"caught": caught, "after": time.monotonic() - t0})
"""


def test_mismatched_collectives_raise_on_every_rank():
    res = run_ranks(2, PRELUDE + MISMATCH, env=NO_COMM, timeout=60, check=False)
    for r in res:
        assert r.records, r.stderr[-2000:]
        rec = r.records[-1]
        assert rec["caught"] is not None, rec
        assert rec["caught"][0] in ("UsageError", "TransportError"), rec
        assert f"rank {r.rank}" in rec["caught"][1], rec
        assert rec["after"] < 20, rec
    # the rank that saw the mismatch names both collectives
    assert any(
        "broadcast" in r.records[-1]["caught"][1] and "allreduce" in r.records[-1]["caught"][1]
        for r in res
    ), [r.records[-1] for r in res]


FALLBACK = """
import warnings
warnings.simplefilter("always")
dist.Backend.register_backend("rppython", rt._create_python, devices=["cpu"])
with warnings.catch_warnings(record=True) as w:
    init("rppython")
    sub = dist.new_group(backend="rppython")
t = torch.ones(3); dist.all_reduce(t)
slow = [str(x.message) for x in w if "SLOW PATH" in str(x.message)]
emit({"slow": slow, "t": t.tolist()})
dist.destroy_process_group()
"""


def test_the_python_fallback_says_once_that_it_is_the_slow_path():
    res = run_ranks(2, PRELUDE + FALLBACK, env=NO_COMM, timeout=60)
    for r in res:
        rec = r.records[-1]
        assert rec["t"] == [2.0] * 3
        assert len(rec["slow"]) == 1, rec  # two groups made, one warning


DEBUG_DETAIL = """
init()
kind = type(dist.group.WORLD._get_backend(torch.device("cpu"))).__name__
t = torch.ones(3); dist.all_reduce(t)
err = None
try:
    dist.all_reduce(torch.ones(3 + rank))
except RuntimeError as e:
    err = str(e)
emit({"kind": kind, "t": t.tolist(), "err": err})
"""


def test_torch_distributed_debug_detail_wraps_and_checks_the_backend():
    # torch's ProcessGroupWrapper (gloo-based fingerprints) needs the backend's sequence numbers.
    res = run_ranks(
        2, PRELUDE + DEBUG_DETAIL, env={**NO_COMM, "TORCH_DISTRIBUTED_DEBUG": "DETAIL"}, timeout=60
    )
    for r in res:
        rec = r.records[-1]
        assert rec["kind"] == "_ProcessGroupWrapper" and rec["t"] == [2.0] * 3, rec
        assert rec["err"] and "mismatch between collectives" in rec["err"], rec


SPLIT = """
init()
mine = [0, 1] if rank < 2 else [2, 3]
# dist.split_group() insists on a device-bound default group (accelerators only); the
# ProcessGroup.split_group it calls reaches the backend's split() the same way.
g = dist.group.WORLD.split_group(mine, timeout=None, opts=None, group_name=f"half{mine[0]}",
                                 group_desc="halves")
t = torch.full((3,), float(rank))
dist.all_reduce(t, group=g)
w = torch.ones(2); dist.all_reduce(w)  # the parent goes on
emit({"t": t.tolist(), "size": g.size(), "rank": g.rank(), "w": w.tolist(),
      "kind": type(g._get_backend(torch.device("cpu"))).__name__,
      # torch splits once per device type; one ringpress backend serves both, as in the parent
      "one": g._get_backend(torch.device("cuda")) is g._get_backend(torch.device("cpu"))})
dist.destroy_process_group()
"""


def test_split_group_makes_ringpress_subgroups():
    res = run_ranks(4, PRELUDE + SPLIT, env=NO_COMM, timeout=90)
    for r in res:
        rec = r.records[-1]
        assert rec["kind"] == "ProcessGroupRingpress" and rec["size"] == 2 and rec["one"]
        assert rec["rank"] == r.rank % 2
        assert rec["t"] == [1.0] * 3 if r.rank < 2 else [5.0] * 3, rec
        assert rec["w"] == [4.0, 4.0]


EXIT_WITH_CALLBACKS = """
import os, sys
init()
mark = os.environ["RP_TEST_MARK"] + f".{rank}"
if os.environ.get("RP_TEST_NO_EXIT_CLOSE") == "1":
    import atexit
    atexit.unregister(rt._native._close_all)
def slow(fut):
    # Still running when the script ends: it must finish, with Python, before finalization.
    time.sleep(float(os.environ["RP_TEST_SLEEP"]))
    t = torch.ones(1000) * 2  # a tensor made and dropped on the callback thread
    with open(mark, "w") as f:
        f.write(str(fut.value()[0][0].item()))
    return t
x = torch.ones(1000)
works = [dist.all_reduce(x, async_op=True) for _ in range(3)]
futs = [w.get_future().then(slow) for w in works]
emit({"issued": len(futs)})
# Exit with the group open and the callbacks running (no destroy_process_group).
"""


def test_callbacks_running_at_exit_finish_before_the_interpreter_finalizes(tmp_path):
    # A callback thread that needs Python once finalization has begun is ended by CPython, and
    # a tensor dropped then (inside a destructor) aborts the process. ringpress.torch closes its
    # groups at exit, which lets running callbacks finish first. The launcher's own release of
    # torch groups at exit (which closes them too, and so waited up to close's 10 s for the
    # callbacks) is switched off, so only ringpress's close can make them finish. The control run
    # (that close switched off too) shows the test can fail: nothing waits for its callbacks,
    # slower than any finalization, and they never write their mark.
    import os

    # Fresh interpreters: the exit handlers' order is what is tested (ranks.run_ranks).
    keep = {**NO_COMM, "RP_TEST_KEEP_GROUPS_AT_EXIT": "1"}
    mark = str(tmp_path / "cb")
    res = run_ranks(
        2,
        PRELUDE + EXIT_WITH_CALLBACKS,
        env={**keep, "RP_TEST_MARK": mark, "RP_TEST_SLEEP": "1"},
        fork=False,
    )
    for r in res:
        with open(f"{mark}.{r.rank}") as f:
            assert float(f.read()) == 8.0, r.stderr[-2000:]  # 1 * 2 * 2 * 2: three sums in order
    ctrl = str(tmp_path / "ctrl")
    env = {
        **keep,
        "RP_TEST_MARK": ctrl,
        "RP_TEST_SLEEP": "20",  # nothing waits for it: finalizing takes ~1 s
        "RP_TEST_NO_EXIT_CLOSE": "1",
    }
    for r in run_ranks(2, PRELUDE + EXIT_WITH_CALLBACKS, env=env, check=False, fork=False):
        assert not os.path.exists(f"{ctrl}.{r.rank}"), "the control run's callback finished"
