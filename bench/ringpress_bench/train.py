"""Training benchmark: DDP step time, bytes sent and held-out loss per gradient-communication mode.

Launch (``ringpress bench train`` = ``python -m ringpress_bench train``)
    ringpress bench train [--nranks 2]            alone: spawns its own ranks on this host
    ringpress bench train --link 1gbit            alone, each rank in a network namespace joined
                                                  by a veth shaped to 1 Gbit/s (root; see netns)
    ringpress bench netns --nranks 2 --rate 1gbit -- python -m ringpress_bench train
    torchrun --nproc-per-node 2 -m ringpress_bench train
Under a launcher (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set) it is one rank of the job.

The task
    A character model on the Python standard library's own source: the ``*.py`` files under
    ``sysconfig.get_paths()["stdlib"]`` (site-packages excluded), sorted by relative path,
    concatenated as bytes, the first ``--data-mb`` MB; the vocabulary is the byte values present.
    The last 5% is held out. Model: the previous ``--context`` (32) characters -> embedding
    ``--embed`` (64), flattened (2048) -> ``--depth`` (6) x (Linear(., ``--width``) + ReLU) ->
    Linear(width, vocab): 25.5M float32 parameters at the defaults (vocabulary 171). Optimizer: SGD, momentum
    0.9, ``--lr`` (0.1), no weight decay. Every rank draws its own batches (``--batch`` positions,
    uniform over the training text, from a generator seeded by (seed, rank, step)), so the ranks'
    gradients differ; every mode sees exactly the same batches.

Modes (each a fresh model from the same seed, run one after another in this job)
    compute        DDP on a gloo group with a hook that returns the bucket unchanged: no
                   communication at all, the compute-only reference (ranks drift apart)
    gloo           plain DDP on a gloo group
    gloo-fp16      torch's fp16_compress_hook on gloo
    gloo-bf16      torch's bf16_compress_hook on gloo (the 16-bit DDP baseline)
    gloo-powersgd  torch's powerSGD_hook on gloo, rank 1, start_powerSGD_iter 2, one DDP bucket
                   (bucket_cap_mb = the model's size: several buckets crash gloo's PowerSGD)
    ringpress-powersgd
                   the same hook and settings on the ringpress group (one bucket: with several,
                   the hook's callbacks issue collectives in an order that can differ by rank)
    ringpress      plain DDP on the ringpress backend (no hook)
    ringpress-K    DDP on ringpress with ringpress.torch.comm_hook, HookState(compression=K,
                   ratio=--ratio, allow=--allow, error_feedback=True); K in none, lossless, bf16,
                   fp16, int8, int4, int2, topk, auto. topk also moves the momentum into the hook
                   (HookState(momentum=0.9), optimizer without momentum: DGC's momentum
                   correction) unless --no-momentum-correction
    Every mode but PowerSGD uses DDP buckets of --bucket-mb (2) MB: with small buckets only the
    last one's communication is left after backward.
    The default process group is "ringpress" and a gloo group (``dist.new_group(backend="gloo")``)
    exists on every rank; gloo modes pass it to DDP as process_group. A mode that cannot run
    (e.g. PowerSGD raising) is reported as "skipped: reason" on every rank.

What is measured, per mode
    ``--warmup`` untimed steps, then ``--steps`` timed ones; a step is zero_grad, forward, loss,
    backward (DDP's communication, overlapped with it, included) and optimizer.step, timed with
    ``time.perf_counter`` on each rank; the step time is the median over steps of the slowest
    rank's time. Bytes sent per step by one rank: for ringpress modes the difference of
    ``comm.stats()["bytes_sent"]`` (measured, headers included); for gloo modes an estimate,
    2(P-1)/P x the bytes allreduced (gradient bytes; fp16 and bf16: half; PowerSGD: the uncompressed
    tensors plus the P and Q factors, as powerSGD_hook sizes them). In a namespace the link's own
    tx counter (/sys/class/net/rpveth) is recorded too, for every mode. Held-out loss: mean
    cross-entropy (nats/char) over ``--eval-samples`` fixed positions of the held-out text after
    the last step, computed on every rank (equal on all ranks when the parameters are). Ratios:
    step time / compute's, and gloo's and PowerSGD's step time / this mode's (speedups).

Rank 0 prints a table, writes the JSON record (machine, versions, command, configuration, every
step time of every rank, the training loss curve) and a PNG plot of step times under
``bench/results/`` (``train_<loopback|netns_RATE>_np<P>[_quick].json``), and shows a progress bar.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import pickle
import platform
import shlex
import statistics
import sys
import sysconfig
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    Progress,
    fmt_bytes,
    machine_info,
    results_dir,
    save_plot,
    versions,
    write_json,
)
from .runner import (
    COMMAND_ENV,
    DEFAULT_NRANKS,
    MODE_ENV,
    ArgParser,
    UsageExit,
    add_alone_args,
    add_common_args,
    spawn_or_run,
)

PROG = "ringpress bench train"
BASE_MODES = (
    "compute",
    "gloo",
    "gloo-fp16",
    "gloo-bf16",
    "gloo-powersgd",
    "ringpress-powersgd",
    "ringpress",
)
HOOK_KINDS = ("none", "lossless", "bf16", "fp16", "int8", "int4", "int2", "topk", "auto")
DEFAULT_MODES = "compute,gloo,gloo-fp16,gloo-powersgd,ringpress-powersgd,ringpress,ringpress-int8,ringpress-int4,ringpress-topk,ringpress-auto"
QUICK = {  # --quick: a smoke test in seconds
    "width": 256,
    "depth": 2,
    "batch": 32,
    "steps": 3,
    "warmup": 2,
    "data_mb": 1.0,
    "eval_samples": 256,
    "modes": "compute,gloo,ringpress,ringpress-int8",
}
DEFAULTS = {
    "width": 2048,
    "depth": 6,
    "batch": 128,
    "steps": 30,
    "warmup": 3,
    "data_mb": 8.0,
    "eval_samples": 4096,
    "modes": DEFAULT_MODES,
}
HELD_OUT = 0.05
MOMENTUM = 0.9
POWERSGD_START = 2
TARGETS = {
    "vs_compute_max": 1.15,
    "vs_gloo_min": 3.0,
    "vs_powersgd_min": 1.4,
    "loss_rel_max": 0.01,
    # Scale-out (4 ranks on 2 hosts at 1 Gbit/s): every mode runs the same steps, so a mode whose
    # held-out loss is within loss_rel_max of plain DDP's reaches it in its own wall time.
    "vs_bf16_time_max": 0.5,
}
FAIL_ENV = "RINGPRESS_BENCH_TRAIN_FAIL"  # tests: "MODE[:RANK]" raises in that mode (and rank)
LINK_IF = "/sys/class/net/rpveth/statistics/tx_bytes"


# --------------------------------------------------------------------------- data and model


def stdlib_text(max_bytes: int) -> tuple[bytes, int]:
    """The first ``max_bytes`` of the stdlib's ``*.py`` sources (sorted by relative path, no
    site-packages), and how many files that took."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in ("site-packages", "dist-packages", "__pycache__")]
        rel = Path(d).relative_to(root)
        rels += [(rel / f).as_posix() for f in files if f.endswith(".py")]
    out, n, used = [], 0, 0
    for rel in sorted(rels):
        try:
            b = (root / rel).read_bytes()
        except OSError:
            continue
        out.append(b)
        n += len(b)
        used += 1
        if n >= max_bytes:
            break
    return b"".join(out)[:max_bytes], used


@dataclass
class CharData:
    """Byte-level text split into training and held-out parts, as vocabulary indices (uint8)."""

    vocab: bytes
    train: Any  # torch.uint8 tensor
    held: Any
    files: int
    context: int

    @classmethod
    def load(cls, data_mb: float, context: int) -> CharData:
        import torch

        text, files = stdlib_text(int(data_mb * 1e6))
        raw = np.frombuffer(text, np.uint8)
        vocab = np.unique(raw)
        lut = np.zeros(256, np.uint8)
        lut[vocab] = np.arange(vocab.size, dtype=np.uint8)
        ids = torch.from_numpy(lut[raw].copy())
        cut = int(len(ids) * (1 - HELD_OUT))
        return cls(bytes(vocab.tolist()), ids[:cut], ids[cut:], files, context)

    def batch(self, n: int, seed: int, rank: int, step: int) -> tuple[Any, Any]:
        """``n`` (input, next char) pairs from the training text, this rank's own for ``step``."""
        import torch

        g = torch.Generator().manual_seed((seed << 40) + (rank << 24) + step)
        ends = torch.randint(self.context, len(self.train), (n,), generator=g)
        return self._windows(self.train, ends)

    def held_out(self, n: int) -> tuple[Any, Any]:
        """``n`` fixed (input, next char) pairs spread evenly over the held-out text."""
        import torch

        span = len(self.held) - self.context
        ends = self.context + torch.arange(n, dtype=torch.int64) * span // n
        return self._windows(self.held, ends)

    def _windows(self, ids: Any, ends: Any) -> tuple[Any, Any]:
        import torch

        idx = ends[:, None] + torch.arange(-self.context, 0)[None, :]
        return ids[idx].long(), ids[ends].long()


def make_model(vocab: int, context: int = 32, embed: int = 64, width: int = 2048, depth: int = 6):
    """previous ``context`` chars -> Embedding(vocab, embed) -> flatten -> depth x (Linear + ReLU)
    -> Linear(width, vocab); call ``torch.manual_seed`` first for a given initialisation."""
    from torch import nn

    layers: list = [nn.Embedding(vocab, embed), nn.Flatten(1)]
    d = context * embed
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, vocab))
    return nn.Sequential(*layers)


def heldout_loss(model: Any, x: Any, y: Any, chunk: int = 512) -> float:
    """Mean cross-entropy (nats per character) of ``model`` on (x, y)."""
    import torch

    total = 0.0
    with torch.no_grad():
        for i in range(0, len(y), chunk):
            out = model(x[i : i + chunk])
            total += float(
                torch.nn.functional.cross_entropy(out, y[i : i + chunk], reduction="sum")
            )
    return total / len(y)


# --------------------------------------------------------------------------- hooks


def _no_comm_hook(state, bucket):  # no annotations: DDP checks them as objects
    import torch

    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


def _counting(hook, count):
    """``hook`` with the estimated bytes this rank sends per bucket added to ``count[0]``."""

    def wrapped(state, bucket):
        count[0] += count[1](state, bucket)
        return hook(state, bucket)

    return wrapped


def _ring(world: int) -> float:
    return 2 * (world - 1) / world


def _powersgd_bytes(world: int):
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import _should_compress

    def est(state, bucket) -> float:
        if state.iter < state.start_powerSGD_iter:
            return _ring(world) * bucket.buffer().numel() * 4
        elems = 0
        for t in bucket.gradients():
            n = t.shape[0]
            m = t.numel() // max(1, n)
            r = min(n, m, state.matrix_approximation_rank)
            ok, before, after = _should_compress(n, m, r, state.min_compression_rate)
            elems += after if ok else before
        return _ring(world) * elems * 4

    return est


# --------------------------------------------------------------------------- control plane


def allgather_obj(comm: Any, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), over the ringpress communicator."""
    data = np.frombuffer(pickle.dumps(obj), np.uint8).copy()
    lens = comm.allgather(np.array([data.size], np.int64)).reshape(-1)
    flat = comm.allgatherv(data, [int(n) for n in lens])
    out, off = [], 0
    for n in lens:
        out.append(pickle.loads(flat[off : off + int(n)].tobytes()))
        off += int(n)
    return out


def _link_tx() -> int | None:
    try:
        with open(LINK_IF) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- one mode


@dataclass
class Ctx:
    args: argparse.Namespace
    rank: int
    size: int
    pg: Any  # the ringpress default group
    comm: Any  # a ringpress Communicator beside it, for the benchmark's own coordination
    gloo: Any  # a gloo group, or None
    data: CharData
    eval_xy: tuple[Any, Any]
    bar: Progress


@dataclass
class Plan:
    """What a mode needs, made without any collective (so a failure here is agreed on safely)."""

    mode: str
    model: Any
    ddp_kw: dict
    hook: Any = None  # (state, hook) to register
    state: Any = None
    count: Any = None  # [estimated bytes so far, estimator or constant]
    source: str = ""
    hook_momentum: float = 0.0  # momentum the hook applies (the optimizer gets the rest)


def prepare(mode: str, ctx: Ctx) -> Plan:
    """The model (seeded), DDP options, hook and its state for ``mode``; no communication."""
    import torch

    args, world = ctx.args, ctx.size
    fail = os.environ.get(FAIL_ENV, "").split(":")
    if fail[0] == mode and (len(fail) < 2 or fail[1] == str(ctx.rank)):
        raise RuntimeError(f"injected failure ({FAIL_ENV})")
    torch.manual_seed(args.seed)
    model = make_model(len(ctx.data.vocab), args.context, args.embed, args.width, args.depth)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kw: dict[str, Any] = {"bucket_cap_mb": args.bucket_mb} if args.bucket_mb else {}
    plan = Plan(mode, model, kw, count=[0.0, 0.0])
    if mode.startswith("gloo") or mode == "compute":
        if ctx.gloo is None:
            raise RuntimeError("no gloo process group (dist.new_group(backend='gloo') failed)")
        kw["process_group"] = ctx.gloo
    if mode == "compute":
        plan.hook, plan.source = (None, _no_comm_hook), "none: no communication"
    elif mode == "gloo":
        plan.count[1] = _ring(world) * grad_bytes
        plan.source = "estimate: 2(P-1)/P x gradient bytes (gloo ring allreduce)"
    elif mode in ("gloo-fp16", "gloo-bf16"):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        hook = (
            default_hooks.fp16_compress_hook
            if mode == "gloo-fp16"
            else default_hooks.bf16_compress_hook
        )
        plan.count[1] = lambda s, b: _ring(world) * b.buffer().numel() * 2
        plan.hook = (ctx.gloo, _counting(hook, plan.count))
        plan.source = f"estimate: 2(P-1)/P x {mode[5:]} bucket bytes"
    elif mode.endswith("-powersgd"):
        import torch.distributed as dist
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

        group = ctx.gloo if mode == "gloo-powersgd" else dist.distributed_c10d._get_default_group()
        kw["process_group"] = group
        kw["bucket_cap_mb"] = math.ceil(grad_bytes / 2**20) + 1  # one bucket
        plan.state = psgd.PowerSGDState(
            process_group=group, matrix_approximation_rank=1, start_powerSGD_iter=POWERSGD_START
        )
        plan.count[1] = _powersgd_bytes(world)
        plan.hook = (plan.state, _counting(psgd.powerSGD_hook, plan.count))
        plan.source = (
            "estimate: 2(P-1)/P x (uncompressed + P + Q factors) x 4 B"
            if group is ctx.gloo
            else "measured: comm.stats() bytes_sent"
        )
    else:
        import ringpress.torch as rpt
        import torch.distributed as dist

        kw["process_group"] = dist.distributed_c10d._get_default_group()
        plan.source = "measured: comm.stats() bytes_sent"
        if mode != "ringpress":
            kind = mode.split("-", 1)[1]
            # top-k: momentum correction (the hook accumulates the velocity before selecting, the
            # optimizer runs without momentum): same update rule as the others when nothing is dropped.
            plan.hook_momentum = (
                MOMENTUM if kind == "topk" and not args.no_momentum_correction else 0.0
            )
            plan.state = rpt.HookState(
                compression=kind, ratio=args.ratio, allow=args.allow, momentum=plan.hook_momentum
            )
            plan.hook = (plan.state, rpt.comm_hook)
    return plan


def run_mode(plan: Plan, ctx: Ctx) -> dict[str, Any]:
    """Train ``plan``'s model under its mode; this rank's measurements."""
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    args, mode, model, state, count = ctx.args, plan.mode, plan.model, plan.state, plan.count
    source = plan.source
    ddp = DDP(model, **plan.ddp_kw)
    if plan.hook is not None:
        ddp.register_comm_hook(*plan.hook)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM - plan.hook_momentum)
    import ringpress.torch as rt

    def comm_stats() -> dict:
        return rt.stats(ctx.pg)

    times, losses = [], []
    total = args.warmup + args.steps
    ctx.comm.barrier()
    sent0 = link0 = stats0 = None
    for step in range(total):
        if step == args.warmup:
            stats0 = comm_stats()
            sent0, link0 = stats0["bytes_sent"], _link_tx()
            count[0] = 0.0
        x, y = ctx.data.batch(args.batch, args.seed, ctx.rank, step)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"training diverged at step {step} (loss {losses[-1]}): lower --lr")
        if step >= args.warmup:
            times.append(dt)
        if ctx.rank == 0:
            ctx.bar.step()
    stats1 = comm_stats()
    link1 = _link_tx()
    if mode.startswith("ringpress"):
        sent = (stats1["bytes_sent"] - sent0) / args.steps
    elif mode == "compute":
        sent = 0.0
    elif callable(count[1]):
        sent = count[0] / args.steps
    else:
        sent = float(count[1])
    rec: dict[str, Any] = {
        "samples_s": times,
        "train_loss": losses,
        "bytes_sent_per_step": sent,
        "bytes_source": source,
        "link_tx_bytes_per_step": (link1 - link0) / args.steps if link0 is not None else None,
        "payload_bytes_per_step": (stats1["payload_bytes"] - stats0["payload_bytes"]) / args.steps
        if mode.startswith("ringpress")
        else None,
    }
    if ctx.rank == 0:
        ctx.bar.start(f"{mode}: held-out loss")
    rec["heldout_loss"] = heldout_loss(model, *ctx.eval_xy)
    if ctx.rank == 0:
        ctx.bar.step()
    if state is not None and hasattr(state, "kinds_used"):
        rec["kinds_used"] = dict(state.kinds_used)
        if "auto" in mode:
            rec["auto_stats"] = stats1.get("auto")
            c0 = (stats0.get("auto") or {}).get("counts", {})
            c1 = (stats1.get("auto") or {}).get("counts", {})
            rec["auto_choices"] = {k: v - c0.get(k, 0) for k, v in c1.items() if v > c0.get(k, 0)}
    if mode.endswith("-powersgd"):
        rec["powersgd"] = {
            "matrix_approximation_rank": 1,
            "start_powerSGD_iter": POWERSGD_START,
            "bucket_cap_mb": plan.ddp_kw["bucket_cap_mb"],
            "timed_steps_compressed": args.warmup >= POWERSGD_START,
        }
    del ddp, opt, model, state, plan
    gc.collect()
    return rec


# --------------------------------------------------------------------------- table and plot


def _ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = {r["mode"]: r for r in rows if r["status"] == "ok"}
    ref_loss_mode = next((m for m in ("gloo", "ringpress", "ringpress-none") if m in ok), None)
    for r in rows:
        if r["status"] != "ok":
            continue
        t = r["median_s"]
        r["vs_compute"] = t / ok["compute"]["median_s"] if "compute" in ok else None
        r["speedup_vs_gloo"] = ok["gloo"]["median_s"] / t if "gloo" in ok else None
        r["speedup_vs_powersgd"] = (
            ok["gloo-powersgd"]["median_s"] / t if "gloo-powersgd" in ok else None
        )
        # Wall time to the same number of steps as 16-bit DDP (torch's bf16_compress_hook).
        r["time_vs_bf16"] = t / ok["gloo-bf16"]["median_s"] if "gloo-bf16" in ok else None
        if ref_loss_mode and r["mode"] != "compute":
            ref = ok[ref_loss_mode]["heldout_loss"]
            r["loss_rel_vs_uncompressed"] = (r["heldout_loss"] - ref) / ref
        else:
            r["loss_rel_vs_uncompressed"] = None
    return {"loss_reference": ref_loss_mode}


def _x(v: float | None, fmt: str = "{:.2f}x") -> str:
    return "-" if v is None else fmt.format(v)


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        f"{'mode':<18}| {'step (med)':>10} | {'x compute':>9} | {'vs gloo':>7} | {'vs PSGD':>7} | "
        f"{'sent/step/rank':>15} | {'held-out loss':>13} | {'vs uncompr.':>11} | notes"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"{r['mode']:<18}| skipped: {r['reason']}")
            continue
        est = "~" if r["bytes_source"].startswith("estimate") else " "
        sent = est + fmt_bytes(r["bytes_sent_per_step"]) if r["bytes_sent_per_step"] else "0"
        notes = []
        if r["mode"] == "compute":
            notes.append("no sync: local gradients, rank 0's loss")
        if r.get("auto_choices"):
            notes.append("auto chose " + ",".join(f"{k}:{v}" for k, v in r["auto_choices"].items()))
        if r.get("link_tx_bytes_per_step"):
            notes.append(f"link tx {fmt_bytes(r['link_tx_bytes_per_step'])}")
        out.append(
            f"{r['mode']:<18}| {r['median_s'] * 1e3:7.1f} ms | {_x(r['vs_compute']):>9} | "
            f"{_x(r['speedup_vs_gloo']):>7} | {_x(r['speedup_vs_powersgd']):>7} | {sent:>15} | "
            f"{r['heldout_loss']:13.4f} | {_x(r['loss_rel_vs_uncompressed'], '{:+.2%}'):>11} | "
            + "; ".join(notes)
        )
    return out


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    t = TARGETS
    out = []
    for r in rows:
        if r["status"] != "ok" or not r["mode"].startswith("ringpress-"):
            continue
        if r["mode"].endswith("-powersgd"):  # torch's compression on our transport: no target
            continue
        checks = []
        for name, v, ok in (
            ("x compute", r["vs_compute"], lambda v: v <= t["vs_compute_max"]),
            ("vs gloo", r["speedup_vs_gloo"], lambda v: v >= t["vs_gloo_min"]),
            ("vs PowerSGD", r["speedup_vs_powersgd"], lambda v: v >= t["vs_powersgd_min"]),
            ("loss", r["loss_rel_vs_uncompressed"], lambda v: abs(v) <= t["loss_rel_max"]),
            ("time vs bf16 DDP", r["time_vs_bf16"], lambda v: v <= t["vs_bf16_time_max"]),
        ):
            if v is not None:
                checks.append(f"{name} {'met' if ok(v) else 'MISSED'}")
        r["targets"] = checks
        out.append(f"  {r['mode']:<18} " + ", ".join(checks))
    if out:
        out.insert(
            0,
            f"targets (stated for 2 ranks at 1 Gbit/s): step <= {t['vs_compute_max']}x compute, "
            f">= {t['vs_gloo_min']:g}x faster than gloo, >= {t['vs_powersgd_min']}x than PowerSGD, "
            f"held-out loss within {t['loss_rel_max']:.0%}; with gloo-bf16 in the run (scale-out: 4 "
            f"ranks on 2 hosts): wall time <= {t['vs_bf16_time_max']}x bf16 DDP's",
        )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """Median step time per mode (bars; whiskers: 25th..75th percentile), compute as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["status"] == "ok"]
    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.8))
    names = [r["mode"] for r in rows]
    med = [r["median_s"] * 1e3 for r in rows]
    lo = [m - np.percentile(r["step_s"], 25) * 1e3 for m, r in zip(med, rows, strict=True)]
    hi = [np.percentile(r["step_s"], 75) * 1e3 - m for m, r in zip(med, rows, strict=True)]
    colors = [
        "tab:gray" if n == "compute" else "tab:orange" if n.startswith("gloo") else "tab:blue"
        for n in names
    ]
    y = np.arange(len(rows))
    ax.barh(y, med, xerr=[np.maximum(lo, 0), np.maximum(hi, 0)], color=colors, capsize=3)
    for yi, r, h in zip(y, rows, hi, strict=True):
        ax.text(
            r["median_s"] * 1e3 + max(h, 0),
            yi,
            f"  {r['median_s'] * 1e3:.0f} ms, loss {r['heldout_loss']:.3f}",
            va="center",
            fontsize=8,
        )
    comp = next((r for r in rows if r["mode"] == "compute"), None)
    if comp:
        ax.axvline(comp["median_s"] * 1e3, color="gray", ls=":", lw=1)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("step time, ms (median of the slowest rank)")
    ax.set_xlim(0, max(m + max(h, 0) for m, h in zip(med, hi, strict=True)) * 1.45)
    link = cfg["link"] or "loopback"
    ax.set_title(
        f"DDP step, {cfg['params'] / 1e6:.1f}M params, batch {cfg['batch']}/rank, "
        f"{cfg['world_size']} ranks, {link}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- a rank


def _threads(args: argparse.Namespace) -> int:
    if args.threads:
        return args.threads
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    here = int(os.environ.get("RINGPRESS_NETNS_NRANKS") or os.environ.get("LOCAL_WORLD_SIZE") or 1)
    return max(1, cpus // max(1, here))


def _how(size: int) -> str:
    if os.environ.get(MODE_ENV):
        return os.environ[MODE_ENV]
    if "RINGPRESS_NETNS_RATE" in os.environ:
        return "netns"
    if "TORCHELASTIC_RUN_ID" in os.environ or "TORCHELASTIC_USE_AGENT_STORE" in os.environ:
        return "torchrun"
    return "env"


def _why(e: BaseException) -> str:
    if os.environ.get("RINGPRESS_BENCH_DEBUG"):
        traceback.print_exc()
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def run_rank(args: argparse.Namespace) -> dict[str, Any] | None:
    """This rank's part; rank 0 prints, writes and returns the record."""
    try:
        import ringpress.torch  # registers the backend
        import torch
        import torch.distributed as dist
    except ImportError as e:
        raise UsageExit(f"needs torch ({e}): pip install 'ringpress[torch]'") from None
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    rank0 = rank == 0
    torch.set_num_threads(_threads(args))
    timeout = datetime.timedelta(seconds=args.pg_timeout)
    dist.init_process_group(
        "ringpress", init_method="env://", rank=rank, world_size=size, timeout=timeout
    )
    pg = dist.distributed_c10d._get_default_group()
    import ringpress

    # The benchmark's own coordination (agreeing on errors, gathering results) runs on a
    # communicator of its own, so a failing mode cannot take it down with the measured group.
    comm = ringpress.Communicator.from_store(
        dist.distributed_c10d._get_default_store(),
        rank,
        size,
        prefix="ringpress_bench/train",
        timeout=args.pg_timeout,
    )
    notes: list[str] = []
    gloo = None
    try:
        gloo = dist.new_group(backend="gloo", timeout=timeout)
    except Exception as e:  # every rank tries; agree below
        notes.append(f"gloo group: {type(e).__name__}: {e}")
    if not all(allgather_obj(comm, gloo is not None)):
        gloo = None
    data = CharData.load(args.data_mb, args.context)
    eval_xy = data.held_out(args.eval_samples)
    n_modes = len(args.mode_list)
    bar = Progress(n_modes * (args.warmup + args.steps + 1), Progress.wanted(args.progress, rank0))

    def say(line: str) -> None:
        if rank0:
            bar.write(line)

    link = os.environ.get("RINGPRESS_NETNS_RATE")
    how = _how(size)
    torch.manual_seed(args.seed)
    n_params = sum(
        p.numel()
        for p in make_model(
            len(data.vocab), args.context, args.embed, args.width, args.depth
        ).parameters()
    )
    threads = torch.get_num_threads()
    say(
        f"train: {size} ranks ({how}{', link ' + link if link else ', loopback'}), "
        f"{n_params / 1e6:.2f}M params (context {args.context}, embed {args.embed}, "
        f"{args.depth} x {args.width}, vocab {len(data.vocab)}), batch {args.batch}/rank, "
        f"SGD lr {args.lr} momentum {MOMENTUM}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"{threads} torch thread(s)/rank"
    )
    say(
        f"data: {len(data.train) + len(data.held)} bytes of stdlib source ({data.files} files), "
        f"{len(data.held)} held out; held-out loss over {args.eval_samples} positions"
    )
    rows: list[dict[str, Any]] = []
    try:
        for mode in args.mode_list:
            if rank0:
                bar.start(mode)
            bar_end = bar.done + args.warmup + args.steps + 1
            rec: dict[str, Any] | None = None
            err = None
            if gloo is None and (mode.startswith("gloo") or mode == "compute"):
                err = "no gloo process group"
            else:
                ctx = Ctx(args, rank, size, pg, comm, gloo, data, eval_xy, bar)
                plan = None
                try:  # no collective in here: a failure on one rank is agreed on below
                    plan = prepare(mode, ctx)
                except Exception as e:
                    err = _why(e)
                if any(e is not None for e in allgather_obj(comm, err)):
                    plan = None  # the failing rank's reason goes in the row
                if plan is not None:
                    try:
                        rec = run_mode(plan, ctx)
                    except Exception as e:
                        if comm.broken:
                            raise
                        err = _why(e)
                    plan = None
            every = allgather_obj(comm, (err, rec))
            errs = [(r, e) for r, (e, _) in enumerate(every) if e is not None]
            row: dict[str, Any] = {"mode": mode}
            if errs:
                r, e = errs[0]
                row.update(status="skipped", reason=f"{e} (rank {r})")
                say(f"{mode}: skipped: {row['reason']}")
            else:
                recs = [x for _, x in every]
                samples = [x["samples_s"] for x in recs]
                step = [max(col) for col in zip(*samples, strict=True)]
                losses = [x["heldout_loss"] for x in recs]
                row.update(
                    status="ok",
                    samples_s=samples,
                    step_s=step,
                    median_s=statistics.median(step),
                    heldout_loss=losses[0],
                    heldout_loss_per_rank=losses,
                    heldout_loss_spread=(max(losses) - min(losses)) / abs(losses[0]),
                    train_loss=recs[0]["train_loss"],
                )
                for k in (
                    "bytes_sent_per_step",
                    "bytes_source",
                    "link_tx_bytes_per_step",
                    "payload_bytes_per_step",
                    "kinds_used",
                    "auto_stats",
                    "auto_choices",
                    "powersgd",
                ):
                    if k in recs[0]:
                        row[k] = recs[0][k]
                row["bytes_sent_per_step_per_rank"] = [x["bytes_sent_per_step"] for x in recs]
                say(
                    f"{mode}: {row['median_s'] * 1e3:.1f} ms/step, "
                    f"{fmt_bytes(row['bytes_sent_per_step'])} sent/step, "
                    f"held-out loss {row['heldout_loss']:.4f}"
                )
            rows.append(row)
            if rank0 and bar.done < bar_end:
                bar.step(bar_end - bar.done)
            comm.barrier()
    finally:
        bar.close()
    extra = _ratios(rows)
    # The DDP models (reference cycles) hold the groups: collect them first, so that the groups
    # and gloo's worker threads end here, not while the interpreter finalizes (a gloo thread that
    # frees a tensor then aborts the process; pytorch/pytorch#179291).
    gc.collect()
    if gloo is not None:
        dist.destroy_process_group(gloo)
        gloo = None
    dist.destroy_process_group()
    if not rank0:
        return None
    lines = table(rows)
    print()
    print(
        f"DDP training step, {size} ranks, {'link ' + link if link else 'loopback'}: median of "
        f"{args.steps} steps (slowest rank); sent = bytes one rank sends per step "
        f"(~ = estimate); loss = held-out cross-entropy after {args.warmup + args.steps} steps"
    )
    # The targets are stated for 1 Gbit/s: elsewhere they would only mislead.
    for line in lines + (
        target_lines(rows) if link and link.lower() in ("1gbit", "1000mbit") else []
    ):
        print(line)
    network = (
        {
            "rate": link,
            "harness": "ringpress_bench.netns",
            "transport": os.environ.get("RINGPRESS_TRANSPORT"),
        }
        if link
        else None
    )
    results: dict[str, Any] = {
        "benchmark": "bench.train",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": os.environ.get(COMMAND_ENV) or shlex.join([*args.prog.split(), *args.argv]),
        "machine": machine_info(("torch",)),
        "versions": versions(None, ("ringpress", "torch", "matplotlib")),
        "host": platform.node(),
        "config": {
            "world_size": size,
            "how": how,
            "link": link,
            "network": network,
            "modes": args.mode_list,
            "params": n_params,
            "model": f"Embedding({len(data.vocab)},{args.embed}) x {args.context} -> flatten -> "
            f"{args.depth} x (Linear({args.width}) + ReLU) -> Linear({len(data.vocab)})",
            "context": args.context,
            "embed": args.embed,
            "width": args.width,
            "depth": args.depth,
            "vocab": len(data.vocab),
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "optimizer": f"SGD(lr={args.lr}, momentum={MOMENTUM})",
            "lr": args.lr,
            "seed": args.seed,
            "data_bytes": len(data.train) + len(data.held),
            "data_files": data.files,
            "held_out_fraction": HELD_OUT,
            "eval_samples": args.eval_samples,
            "ratio": args.ratio,
            "allow": args.allow,
            "bucket_cap_mb": args.bucket_mb,
            "torch_threads": threads,
            "quick": args.quick,
            "statistic": "median over timed steps of the max over ranks of the step time",
            "step": "zero_grad + forward + loss + backward (DDP comm) + optimizer.step",
            "targets": TARGETS,
        },
        "rows": rows,
        "notes": notes,
        **extra,
    }
    write_json(results, args.json)
    if not args.no_plot:
        save_plot(plot, results, args.png)
    return results


# --------------------------------------------------------------------------- command line


def _mode_list(text: str) -> list[str]:
    out = []
    for m in (x.strip() for x in text.split(",")):
        if not m:
            continue
        if m not in BASE_MODES and not (m.startswith("ringpress-") and m[10:] in HOOK_KINDS):
            raise ValueError(
                f"unknown mode {m!r}: choose from {', '.join(BASE_MODES)}, "
                f"ringpress-KIND (KIND in {', '.join(HOOK_KINDS)})"
            )
        if m in out:
            raise ValueError(f"mode {m!r} given twice")
        out.append(m)
    if not out:
        raise ValueError("no modes given")
    return out


def build_parser(prog: str = PROG) -> ArgParser:
    ap = ArgParser(
        prog=prog,
        description="DDP training step time, bytes sent and held-out loss per communication "
        "mode (gloo, fp16, PowerSGD, ringpress and its hook). Alone (no launcher) it starts "
        "--nranks ranks itself; under torchrun or the netns harness it is one rank.",
        epilog="examples: ringpress bench train --quick | ringpress bench netns --nranks 2 --rate "
        "1gbit -- python -m ringpress_bench train | torchrun --nproc-per-node 2 -m "
        "ringpress_bench train --steps 10",
    )
    d = DEFAULTS
    ap.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated modes (default {DEFAULT_MODES}); also "
        f"ringpress-KIND for KIND in {','.join(HOOK_KINDS)}",
    )
    ap.add_argument("--steps", type=int, default=None, help=f"timed steps (default {d['steps']})")
    ap.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed steps first (default {d['warmup']}; PowerSGD compresses from "
        f"step {POWERSGD_START})",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"positions per rank per step (default {d['batch']})",
    )
    ap.add_argument("--width", type=int, default=None, help=f"hidden width (default {d['width']})")
    ap.add_argument(
        "--depth", type=int, default=None, help=f"hidden Linear+ReLU layers (default {d['depth']})"
    )
    ap.add_argument("--context", type=int, default=32, help="input characters (default 32)")
    ap.add_argument("--embed", type=int, default=64, help="embedding dim (default 64)")
    ap.add_argument(
        "--data-mb",
        type=float,
        default=None,
        help=f"MB of stdlib source to use (default {d['data_mb']:g})",
    )
    ap.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help=f"held-out positions for the loss (default {d['eval_samples']})",
    )
    ap.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ratio", type=float, default=0.01, help="topk fraction (default 0.01)")
    ap.add_argument(
        "--no-momentum-correction",
        action="store_true",
        help="topk: keep the momentum in the optimizer (default: in the hook, before selection, as DGC)",
    )
    ap.add_argument(
        "--allow",
        default="lossless,bf16,int8",
        help="kinds auto may choose (default lossless,bf16,int8)",
    )
    ap.add_argument(
        "--bucket-mb",
        type=float,
        default=2.0,
        help="DDP bucket_cap_mb for all modes but PowerSGD (default 2: small buckets let the "
        "communication of all but the last overlap backward; 0 = DDP's 25)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per rank (default: CPUs / ranks on this host)",
    )
    ap.add_argument(
        "--pg-timeout",
        type=float,
        default=300,
        help="process-group timeout in seconds (default 300)",
    )
    add_alone_args(ap, "ranks")
    add_common_args(ap)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny model and few steps (width 256, depth 2, 3 steps; for tests)",
    )
    return ap


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    ap = build_parser(prog)
    args = ap.parse_args(argv)
    args.prog, args.argv = prog, list(sys.argv[1:] if argv is None else argv)
    base = QUICK if args.quick else DEFAULTS
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    try:
        args.mode_list = _mode_list(args.modes)
    except ValueError as e:
        ap.error(str(e))
    for name in ("steps", "batch", "width", "depth", "context", "embed", "eval_samples"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0 or args.data_mb <= 0 or args.lr <= 0 or args.pg_timeout <= 0:
        ap.error("--warmup must be >= 0; --data-mb, --lr and --pg-timeout positive")
    if not 0 < args.ratio <= 1:
        ap.error("--ratio must be in (0, 1]")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be positive")
    args.alone = not ("RANK" in os.environ and "WORLD_SIZE" in os.environ)
    if not args.alone:
        for v in ("MASTER_ADDR", "MASTER_PORT"):
            if v not in os.environ:
                ap.error(f"RANK is set but {v} is not: run it under a launcher, or alone")
        if os.environ.get(MODE_ENV) != "alone":
            for opt, value in (
                ("--nranks", args.nranks),
                ("--link", args.link),
                ("--timeout", args.timeout),
            ):
                if value is not None:
                    ap.error(
                        f"{opt} is for alone mode (no launcher): the launcher starts the ranks"
                    )
    elif args.nranks is not None and not 1 <= args.nranks <= 64:
        ap.error("--nranks must be between 1 and 64")
    rate = os.environ.get("RINGPRESS_NETNS_RATE") or (args.link if args.alone else None)
    size = (args.nranks or DEFAULT_NRANKS) if args.alone else int(os.environ["WORLD_SIZE"])
    if args.json is None:
        where = f"netns_{rate}" if rate else "loopback"
        args.json = results_dir() / f"train_{where}_np{size}{'_quick' if args.quick else ''}.json"
    args.json = Path(args.json).resolve()
    if args.png is None:
        args.png = args.json.with_suffix(".png")
    args.png = Path(args.png).resolve()
    return args


def _rank_argv(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """The command line every spawned rank runs: this one, with the output paths resolved."""
    return [*argv, "--json", str(args.json), "--plot", str(args.png)]


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Alone: start the ranks (in namespaces with --link), rank 0 on our terminal; under a
    launcher: be one rank. The runner turns failures into exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    return spawn_or_run(args, argv, prog, "train", lambda: _rank_argv(args, argv), run_rank)
