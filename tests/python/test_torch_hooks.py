"""DDP communication hook of ringpress.torch, as real processes: exactness of the lossless modes
against gloo, agreement of the lossy modes across ranks with many buckets, checkpointed error
feedback, and errors reaching every rank's training loop."""

from __future__ import annotations

import pytest
from ranks import free_port, run_ranks

pytest.importorskip("torch")

NO_COMM = {"RP_TEST_NO_COMM": "1"}

PRELUDE = """
import datetime, io, time, torch, torch.distributed as dist
import ringpress, ringpress.torch as rt
dist.init_process_group("ringpress", rank=rank, world_size=size, timeout=datetime.timedelta(seconds=TIMEOUT))
def model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8)).to(dtype)
def batch(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(1000 * rank + step % 2)  # two batches per rank: the loss falls
    x = torch.randn(32, 32, generator=g)
    return x.to(dtype), torch.sin(x[:, :8] * 2).to(dtype)
def flat(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])
def make(state=None, group=None, dtype=torch.float32, m=None, cap=0.01):
    m = m if m is not None else model(dtype)
    ddp = torch.nn.parallel.DistributedDataParallel(m, process_group=group, bucket_cap_mb=cap)
    if state is not None:
        rt.register(ddp, state)
    return m, ddp, torch.optim.SGD(ddp.parameters(), lr=0.2)
def step(ddp, opt, i, dtype=torch.float32):
    x, y = batch(i, dtype)
    loss = (ddp(x) - y).square().mean()
    opt.zero_grad(); loss.backward(); opt.step()
    return float(loss)
"""


def prelude(timeout: float = 30) -> str:
    return f"TIMEOUT = {timeout}\n" + PRELUDE


EXACT_BODY = """
gloo = dist.new_group(backend="gloo")
out = {}
for dtype in (torch.float32, torch.float64):
    ref_m, ref_ddp, ref_opt = make(group=gloo, dtype=dtype)
    for i in range(5):
        step(ref_ddp, ref_opt, i, dtype)
    for kind in ("none", "lossless", "int8"):
        st = rt.HookState(kind)
        m, ddp, opt = make(st, dtype=dtype)
        for i in range(5):
            step(ddp, opt, i, dtype)
        out[f"{kind} {dtype}"] = [bool(torch.equal(flat(m), flat(ref_m))), dict(st.kinds_used)]
emit(out)
dist.destroy_process_group()
"""


def test_lossless_modes_are_bit_identical_to_gloo_ddp():
    res = run_ranks(2, prelude() + EXACT_BODY, env=NO_COMM, timeout=120)
    for r in res:
        out = r.records[-1]
        for key in (
            "none torch.float32",
            "lossless torch.float32",
            "none torch.float64",
            "lossless torch.float64",
        ):
            assert out[key][0], f"rank {r.rank}: {key} differs from gloo"
        # int8 on float64 buckets falls back to lossless (lossy kinds need float32): still exact
        assert out["int8 torch.float64"][0] and set(out["int8 torch.float64"][1]) == {"lossless"}
        # int8 on float32 is lossy: not the same bits as gloo, which shows the hook really compressed
        assert not out["int8 torch.float32"][0] and set(out["int8 torch.float32"][1]) == {"int8"}


LOSSY_BODY = """
out = {}
for kind in ("none", "int8", "int4", "bf16", "topk", "auto"):
    st = rt.HookState(kind, ratio=0.05, allow="lossless,bf16,int8,topk")
    m, ddp, opt = make(st)
    nb = []
    losses = [step(ddp, opt, i) for i in range(12)]
    # every rank must hold the same parameters: compare through an allreduce of a checksum
    v = flat(m).double()
    chk = torch.tensor([float(v.sum()), float((v * torch.arange(v.numel())).sum())], dtype=torch.float64)
    lo, hi = chk.clone(), chk.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN); dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    out[kind] = {"same": bool(torch.equal(lo, hi)), "first": losses[0], "last": sum(losses[-3:]) / 3,
                 "iters": st.iteration, "kinds": dict(st.kinds_used), "res": st.residual_norm(),
                 "buckets": len(st._residuals.buckets), "layout_changes": st.layout_changes}
emit(out)
dist.destroy_process_group()
"""


CODEC_PARAMS_BODY = """
out = {}
cases = {
    "int8-stochastic": dict(compression="int8", stochastic=True),
    "int2": dict(compression="int2"),
    "sign": dict(compression="sign"),
    "ternary": dict(compression="ternary"),
    "randomk": dict(compression="randomk", ratio=0.1),
    "threshold": dict(compression="threshold", threshold=1e-3),
    "topk-fp16": dict(compression="topk", ratio=0.1, values="fp16", sampled=False),
}
for name, kw in cases.items():
    st = rt.HookState(**kw)
    m, ddp, opt = make(st)
    before = flat(m).clone()
    losses = [step(ddp, opt, i) for i in range(4)]
    v = flat(m).double()
    chk = torch.tensor([float(v.sum()), float((v * torch.arange(v.numel())).sum())], dtype=torch.float64)
    lo, hi = chk.clone(), chk.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN); dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    out[name] = {"same": bool(torch.equal(lo, hi)), "moved": float((flat(m) - before).abs().max()),
                 "kinds": dict(st.kinds_used), "res": st.residual_norm(),
                 "finite": all(x == x for x in losses)}
emit(out)
dist.destroy_process_group()
"""


def test_every_wire_codec_and_its_parameters_reach_the_hook():
    # the registry's codecs beyond the first seven, with the parameters the RPZC methods had
    res = run_ranks(2, prelude() + CODEC_PARAMS_BODY, env=NO_COMM, timeout=180)
    for r in res:
        for name, o in r.records[-1].items():
            kind = name.split("-")[0]
            assert o["same"], f"rank {r.rank} {name}: ranks hold different parameters"
            assert o["moved"] > 0 and o["finite"], (name, o)
            assert o["kinds"].get(kind, 0) > 0, (name, o)
            assert o["res"] > 0, (name, o)  # lossy with error feedback: something was held back


@pytest.mark.parametrize("nranks", [2, 3])
def test_lossy_modes_agree_across_ranks_with_many_buckets(nranks):
    res = run_ranks(nranks, prelude() + LOSSY_BODY, env=NO_COMM, timeout=180)
    for r in res:
        plain = r.records[-1]["none"]["last"]
        assert plain < 0.95 * r.records[-1]["none"]["first"]
        for kind, o in r.records[-1].items():
            assert o["same"], f"rank {r.rank} {kind}: ranks hold different parameters"
            assert abs(o["last"] - plain) < 0.03 * plain, (
                f"{kind} trains unlike uncompressed ({plain}): {o}"
            )
            assert o["iters"] == 12
            if kind == "none":
                continue
            if kind != "auto":
                assert set(o["kinds"]) == {kind} and sum(o["kinds"].values()) >= 30, (
                    o
                )  # several buckets a step
            if kind in ("int4", "topk"):
                assert o["res"] > 0 and o["buckets"] >= 3, (
                    o
                )  # error feedback holds what was dropped


RESUME_BODY = """
def run(steps, state=None, load=None, warm=0):
    # Exact top-k over one bucket selects the same entries whatever the order DDP puts the
    # parameters in (its first step after a restart uses its initial layout): identical resume.
    st = rt.HookState("topk", ratio=0.02, warmup_steps=warm, sampled=False)
    m = model()
    opt_state = None
    if load is not None:
        m.load_state_dict(load["model"])
        if load["hook"] is not None:
            st.load_state_dict(load["hook"])
        opt_state = load["opt"]
    m, ddp, opt = make(st, m=m, cap=100)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    for i in range(steps[0], steps[1]):
        step(ddp, opt, i)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict(), "hook": st.state_dict()}, buf)
    buf.seek(0)
    return m, torch.load(buf), st
full, _, st_full = run((0, 8), warm=1)
half, ckpt, st_half = run((0, 4), warm=1)
resumed, _, st_res = run((4, 8), load=ckpt)
ckpt_nores = dict(ckpt, hook=None)
nores, _, _ = run((4, 8), load=ckpt_nores)
emit({"resumed_equal": bool(torch.equal(flat(full), flat(resumed))),
      "nores_equal": bool(torch.equal(flat(full), flat(nores))),
      "iters": [st_full.iteration, st_res.iteration], "ckpt_res": st_half.residual_norm(),
      "nparams": len(ckpt["hook"]["residuals"])})
dist.destroy_process_group()
"""


def test_hook_state_checkpoint_resumes_identically():
    res = run_ranks(2, prelude() + RESUME_BODY, env=NO_COMM, timeout=120)
    for r in res:
        o = r.records[-1]
        assert o["ckpt_res"] > 0 and o["nparams"] == 8  # 4 weights + 4 biases carry residuals
        assert o["iters"] == [8, 8]
        assert o["resumed_equal"], (
            f"rank {r.rank}: a restored hook state did not resume identically"
        )
        assert not o["nores_equal"], (
            "dropping the residuals made no difference: the test would not catch a lost state"
        )


DEATH_BODY = """
st = rt.HookState("int8")
m, ddp, opt = make(st)
t0 = None
try:
    for i in range(1000):
        if i == 3:
            if rank == 1:
                import os, signal
                os.kill(os.getpid(), signal.SIGKILL)
            t0 = time.monotonic()
        step(ddp, opt, i)
    emit({"raised": None})
except Exception as e:
    emit({"raised": type(e).__name__, "msg": str(e)[:400], "after": time.monotonic() - t0})
"""


def test_peer_death_raises_in_the_training_loop():
    res = run_ranks(2, prelude(timeout=5) + DEATH_BODY, env=NO_COMM, timeout=60, check=False)
    assert res[1].returncode == -9
    assert res[0].records, res[0].stderr[-2000:]
    o = res[0].records[-1]
    assert o["raised"] is not None, "the survivor trained on after its peer died"
    # Either the next hook call raises the broken communicator's TransportError itself, or DDP's
    # reducer rethrows the future's error, which carries ringpress's type and text (not "Unable to
    # cast ... to Tensor", which a future holding an exception object gives). Both name the peer.
    assert o["raised"] == "TransportError" or "TransportError:" in o["msg"], o
    assert "peer 1" in o["msg"], o
    assert "Unable to cast" not in o["msg"], o
    assert o["after"] < 5 + 2, o


WRONG_GROUP_BODY = """
dist.destroy_process_group()
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['RP_TEST_PORT2']}", rank=rank, world_size=size)
m, ddp, opt = make(rt.HookState("int8"))
try:
    step(ddp, opt, 0)
    emit({"err": None})
except Exception as e:
    emit({"err": str(e)})
"""


def test_hook_without_a_ringpress_group_says_so():
    # The gloo group's own free port (MASTER_PORT + 1 could be anyone's, e.g. a transport's).
    env = {**NO_COMM, "RP_TEST_PORT2": str(free_port())}
    res = run_ranks(2, prelude() + WRONG_GROUP_BODY, env=env, timeout=60, check=False)
    for r in res:
        assert r.records, r.stderr[-2000:]
        assert "ringpress process group" in (r.records[-1]["err"] or ""), r.records


MOMENTUM_BODY = """
gloo = dist.new_group(backend="gloo")
def train(state, group, momentum):
    m = model()
    ddp = torch.nn.parallel.DistributedDataParallel(m, process_group=group, bucket_cap_mb=0.01)
    if state is not None:
        rt.register(ddp, state)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=momentum)
    for i in range(6):
        x, y = batch(i)
        loss = (ddp(x) - y).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    return m
ref = flat(train(None, gloo, 0.9))
st = rt.HookState("none", momentum=0.9)
moved = flat(train(st, None, 0.0))
st_topk = rt.HookState("topk", ratio=0.05, momentum=0.9)
train(st_topk, None, 0.0)
sd = st_topk.state_dict()
emit({"maxdiff": float((ref - moved).abs().max()), "scale": float(ref.abs().max()),
      "vel_keys": sorted(sd["velocities"]) == sorted(sd["residuals"]) and len(sd["velocities"]) == 8,
      "vel_norm": float(sum(float(v.square().sum()) for v in sd["velocities"].values())),
      "masked": float(min((v == 0).float().mean() for v in sd["velocities"].values()))})
dist.destroy_process_group()
"""


def test_momentum_correction_moves_sgd_momentum_into_the_hook():
    res = run_ranks(2, prelude() + MOMENTUM_BODY, env=NO_COMM, timeout=120)
    for r in res:
        o = r.records[-1]
        # Uncompressed, velocity in the hook + SGD without momentum = DDP with SGD momentum.
        assert o["maxdiff"] < 1e-5 * max(1.0, o["scale"]), o
        # top-k: velocities checkpointed per parameter, and the entries just sent restart at 0.
        assert o["vel_keys"] and o["vel_norm"] > 0, o
        assert o["masked"] > 0, o


def test_torchrun_example_trains():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ranks import free_port

    example = Path(__file__).resolve().parents[2] / "examples" / "train_ddp.py"
    if not example.exists():
        pytest.skip("examples/ not in this checkout")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        str(example),
        "--steps",
        "4",
        "--width",
        "64",
        "--compression",
        "int8",
    ]
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "held-out loss" in p.stdout and "'int8'" in p.stdout, p.stdout


POWERSGD_BODY = """
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps
gloo = dist.new_group(backend="gloo")
def powersgd(group, cap, steps):
    m, ddp, opt = make(group=group, cap=cap)
    st = ps.PowerSGDState(process_group=group, matrix_approximation_rank=1, start_powerSGD_iter=2,
                          min_compression_rate=0.5, use_error_feedback=True, warm_start=True)
    ddp.register_comm_hook(st, ps.powerSGD_hook)
    for i in range(steps):
        step(ddp, opt, i)
    return flat(m)
out = {}
# One bucket: the hook's collectives come in one order on every rank.
out["equal"] = bool(torch.equal(powersgd(gloo, 25, 6), powersgd(None, 25, 6)))
# Many buckets: the hook issues bucket k's second and third allreduce from future callbacks while
# backward issues bucket k+1's first, so the order may differ between ranks (gloo hangs then).
# ringpress must either agree or raise a collective mismatch on every rank, never hang.
t0 = time.monotonic()
try:
    p = powersgd(None, 0.01, 20)
    g = [torch.zeros_like(p) for _ in range(size)]
    dist.all_gather(g, p, group=gloo)
    out["many"] = "same" if all(torch.equal(g[0], q) for q in g) else "differ"
except (ringpress.RingpressError, RuntimeError) as e:  # DDP's reducer rethrows as RuntimeError
    ok = "UsageError" in type(e).__name__ + str(e) and "collective mismatch" in str(e)
    out["many"] = "UsageError" if ok else type(e).__name__ + ": " + str(e)[-500:]
out["many_s"] = time.monotonic() - t0
emit(out)
"""


def test_torch_powersgd_hook_runs_on_the_ringpress_group():
    # PowerSGD waits for a second allreduce inside the first one's future callback: those
    # callbacks must not run on the thread that executes the requests (it used to hang here).
    # With two ranks a sum has one order, so its result is gloo's, bit for bit.
    for r in run_ranks(2, prelude(10) + POWERSGD_BODY, env=NO_COMM, timeout=120):
        rec = r.records[-1]
        assert rec["equal"], r.stderr[-1500:]
        assert rec["many"] in ("same", "UsageError"), rec
        assert rec["many_s"] < 10 + 2 + 10, rec


OVERFLOW_STEP_BODY = """
out = {}
for kind, momentum in (("none", 0.9), ("int8", 0.9), ("int4", 0.0), ("topk", 0.9)):
    st = rt.HookState(kind, momentum=momentum)
    m, ddp, opt = make(st)
    skipped = []
    for i in range(5):
        x, y = batch(i)
        if i == 2 and rank == size - 1:
            x = x.clone(); x[0, 0] = float("inf")  # one rank overflows (fp16 loss scaling)
        loss = (ddp(x) - y).square().mean()
        opt.zero_grad(); loss.backward()
        # What a loss scaler does: skip the step where any gradient is not finite.
        if all(bool(torch.isfinite(p.grad).all()) for p in m.parameters()):
            opt.step()
        else:
            skipped.append(i)
    sd = st.state_dict()
    state_finite = all(bool(torch.isfinite(t).all()) for part in ("velocities", "residuals")
                       for t in sd.get(part, {}).values())
    out[kind] = [skipped, bool(torch.isfinite(flat(m)).all()), state_finite, ddp.module is m]
emit(out)
dist.destroy_process_group()
"""


def test_an_overflow_step_is_skipped_on_every_rank_and_forgotten():
    # NaN/Inf gradients on one rank: every rank sees non-finite gradients after the hook (a loss
    # scaler skips that step everywhere), the communicator goes on, and neither the momentum
    # velocity nor the error-feedback residual carries the overflow into later steps.
    res = run_ranks(2, prelude() + OVERFLOW_STEP_BODY, env=NO_COMM, timeout=120)
    for r in res:
        for kind, (skipped, params_finite, state_finite, _) in r.records[-1].items():
            assert skipped == [2], (kind, skipped)
            assert params_finite and state_finite, kind
