"""Every collective and point-to-point, nccl-tests style: ringpress vs gloo, through
``torch.distributed`` and through the raw ``ringpress.Communicator``, in one job.

Launch (``ringpress bench collectives``)
    ringpress bench collectives [--nranks 2]       alone: spawns its own ranks on this host
    ringpress bench collectives --link 1gbit       alone, ranks in namespaces joined by a shaped link
    torchrun --nproc-per-node P -m ringpress_bench collectives [options]

What is measured
    For every op and size (bytes per rank of float32; default 4 KiB, 64 KiB, 1 MiB, 16 MiB):
    - ``dist ringpress``: the ``torch.distributed`` call (``dist.all_reduce(t)``, ...) on a
      ringpress default group: what a torch user sees, Python wrapper and dispatcher included;
    - ``dist gloo``: the same call on a gloo group over the same ranks;
    - ``raw``: the same transfer through ``ringpress.Communicator`` (numpy view of the same
      memory) for the ops it offers (all_reduce, broadcast, all_gather, reduce_scatter, barrier).
    p2p is a ring exchange: every rank sends its buffer to rank+1 and receives from rank-1, as one
    ``batch_isend_irecv``.
    A sample: a gloo barrier, then ``inner`` back-to-back calls (``inner`` makes a sample last
    about 10 ms), time / inner; the slowest rank's time counts (gathered over gloo). Reported: the
    median of ``--repeats`` samples. ``--isolated``: a sample is one call right after a barrier of
    the same implementation (what a lone loss or metric allreduce in a training loop sees), and
    there are ``ISOLATED_FACTOR`` x ``--repeats`` samples. Each implementation of an op runs its
    samples as one block, the order rotating from size to size. Every result is checked once
    against the expected values before timing (a wrong one aborts the run).
    Ratios: ``gloo/rp`` = gloo time / dist-ringpress time (> 1: ringpress faster);
    ``rp/raw`` = dist-ringpress time / raw time (the cost of the torch layer; 1.0 is free).

Results: a table on rank 0 and ``--json`` (default
``collectives_np<P>[_quick][_isolated].json`` under ``bench/results/`` in a checkout) with every
sample.

Usage: ``ringpress bench collectives [--quick] [--isolated] [--ops all_reduce,...]
[--sizes 4K,1M] [--repeats 7] [--nranks 2] [--link RATE] [--json PATH]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import fmt_bytes, machine_info, parse_sizes, results_dir, versions, write_json
from .runner import (
    PROG,
    ArgParser,
    BenchError,
    UsageExit,
    add_alone_args,
    spawn_or_run,
)

OPS = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "reduce_scatter",
    "reduce",
    "gather",
    "scatter",
    "all_to_all",
    "p2p",
    "barrier",
)
DEFAULT_SIZES = "4K,64K,1M,16M"
ISOLATED_FACTOR = 5  # --isolated: samples per --repeats (one call each, so more of them)
QUICK_SIZES = "4K,256K"


def build_parser(prog: str) -> ArgParser:
    ap = ArgParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}"
    )
    ap.add_argument("--sizes", default=None, help=f"bytes per rank (default {DEFAULT_SIZES})")
    ap.add_argument("--repeats", type=int, default=None, help="samples per measurement (default 7)")
    ap.add_argument("--json", type=Path, default=None, help="JSON record path")
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, 3 samples (tests)")
    ap.add_argument(
        "--isolated",
        action="store_true",
        help="one call per sample, right after a barrier of the same implementation "
        f"({ISOLATED_FACTOR} x --repeats samples)",
    )
    ap.add_argument(
        "--launcher",
        choices=("auto", "env"),
        default="auto",
        help="auto: alone unless RANK/WORLD_SIZE are set (torchrun); env: be one rank",
    )
    add_alone_args(ap)
    return ap


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    ap = build_parser(prog)
    args = ap.parse_args(argv)
    args.op_list = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in args.op_list if o not in OPS]
    if unknown:
        ap.error(f"unknown op(s) {','.join(unknown)}; choose from {','.join(OPS)}")
    try:
        args.size_list = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    except ValueError as e:
        ap.error(str(e))
    if any(s % 4 for s in args.size_list):
        ap.error("sizes must be multiples of 4 bytes (float32)")
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.repeats < 1:
        ap.error("--repeats must be positive")
    in_launcher = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    args.alone = args.launcher == "auto" and not in_launcher
    return args


class Case:
    """One op at one size: per implementation, a zero-argument call (None: not offered) and a
    check of its result."""

    def __init__(self, op: str, nbytes: int, rank: int, size: int, gloo: Any, comm: Any) -> None:
        import torch
        import torch.distributed as dist

        self.op, self.nbytes = op, nbytes
        n = nbytes // 4
        P = size
        self.x = torch.full((n,), float(rank + 1))
        x, t = self.x, torch.empty(n)
        out_list = [torch.empty(n) for _ in range(P)]
        flat = torch.empty(P * n)
        big = torch.full((P * n,), float(rank + 1))
        nxt, prv = (rank + 1) % P, (rank - 1) % P
        recv = torch.empty(n)
        xn, tn, flatn, bign = x.numpy(), t.numpy(), flat.numpy(), big.numpy()
        total = float(P * (P + 1) // 2)

        def reset() -> None:
            x.fill_(float(rank + 1))

        def p2p(group: Any = None) -> None:
            ops = [dist.P2POp(dist.isend, x, nxt, group), dist.P2POp(dist.irecv, recv, prv, group)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()

        # torch 2.13 renamed all_gather_into_tensor / reduce_scatter_tensor (the old names warn on
        # every call, which would be timed too).
        gather_single = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
        scatter_single = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)

        # (dist call with group=g, raw call or None, check)
        table: dict[str, tuple[Callable[[Any], Any], Callable[[], Any] | None, Callable[[], bool]]]
        table = {
            "all_reduce": (
                lambda g: dist.all_reduce(x, group=g),
                lambda: comm.allreduce(xn),
                lambda: bool((x == total).all()),
            ),
            "broadcast": (
                lambda g: dist.broadcast(x, src=0, group=g),
                lambda: comm.broadcast(xn, root=0),
                lambda: bool((x == 1.0).all()),
            ),
            "all_gather": (
                lambda g: gather_single(flat, x, group=g),
                lambda: comm.allgather(xn, out=flatn),
                lambda: all(bool((flat[p * n : (p + 1) * n] == p + 1).all()) for p in range(P)),
            ),
            "reduce_scatter": (
                lambda g: scatter_single(t, big, group=g),
                lambda: comm.reduce_scatter(bign, out=tn),
                lambda: bool((t == total).all()),
            ),
            "reduce": (
                lambda g: dist.reduce(x, dst=0, group=g),
                None,
                lambda: rank != 0 or bool((x == total).all()),
            ),
            "gather": (
                lambda g: dist.gather(x, out_list if rank == 0 else None, dst=0, group=g),
                None,
                lambda: rank != 0 or all(bool((out_list[p] == p + 1).all()) for p in range(P)),
            ),
            "scatter": (
                lambda g: dist.scatter(t, out_list if rank == 0 else None, src=0, group=g),
                None,
                lambda: True,
            ),
            "all_to_all": (
                lambda g: dist.all_to_all_single(flat, big, group=g),
                None,
                lambda: all(bool((flat[p * n : (p + 1) * n] == p + 1).all()) for p in range(P)),
            ),
            "p2p": (
                lambda g: p2p(g),
                None,
                lambda: bool((recv == prv + 1).all()),
            ),
            "barrier": (lambda g: dist.barrier(group=g), lambda: comm.barrier(), lambda: True),
        }
        self.dist_call, self.raw_call, self.check = table[op]
        self.reset = reset
        self.gloo = gloo
        # Each implementation's own barrier (--isolated synchronizes with it).
        self.barriers: dict[str, Callable[[], Any]] = {
            "raw": comm.barrier,
            "ringpress": dist.barrier,
            "gloo": lambda: dist.barrier(group=gloo),
        }

    def impls(self) -> dict[str, Callable[[], Any] | None]:
        return {
            "raw": self.raw_call,
            "ringpress": lambda: self.dist_call(None),
            "gloo": lambda: self.dist_call(self.gloo),
        }


def slowest(value: float, gloo: Any) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=gloo)
    return float(t[0])


def measure(
    case: Case, name: str, fn: Callable[[], Any], repeats: int, gloo: Any, isolated: bool = False
) -> list[float]:
    import torch.distributed as dist

    case.reset()
    fn()
    if not case.check():
        raise BenchError(f"{name} {case.op} {fmt_bytes(case.nbytes)}: wrong result on this rank")
    for _ in range(3):  # warm-up
        case.reset()
        fn()
    if isolated:
        barrier, samples = case.barriers[name], []
        for _ in range(repeats * ISOLATED_FACTOR):
            case.reset()
            barrier()
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return [slowest(s, gloo) for s in samples]
    # inner: about 10 ms per sample, agreed by every rank
    t0 = time.perf_counter()
    fn()
    one = slowest(time.perf_counter() - t0, gloo)
    inner = max(1, min(2000, int(0.01 / max(one, 1e-7))))
    samples = []
    for _ in range(repeats):
        case.reset()
        dist.barrier(group=gloo)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append(slowest((time.perf_counter() - t0) / inner, gloo))
    return samples


def run_rank(args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        import torch
        import torch.distributed as dist
    except ImportError as e:
        raise UsageExit(f"needs torch ({e})") from None
    import ringpress
    import ringpress.torch as rt

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group(
        "ringpress", rank=rank, world_size=size, timeout=datetime.timedelta(seconds=300)
    )
    gloo = dist.new_group(backend="gloo")
    comm = ringpress.Communicator.from_store(
        dist.distributed_c10d._get_default_store(), rank, size, prefix="bench/collectives"
    )
    rank0 = rank == 0
    names = ("raw", "ringpress", "gloo")

    def say(s: str) -> None:
        if rank0:
            print(s, flush=True)

    say(
        f"ringpress bench collectives: {size} ranks, native backend {rt.NATIVE}, "
        f"transport {comm.transport((rank + 1) % size) if size > 1 else 'self'}, "
        + ("one call after a barrier per sample" if args.isolated else "back-to-back calls")
    )
    say(
        f"{'op':<15}{'size':>9}{'raw us':>11}{'dist rp us':>12}{'dist gloo us':>14}"
        f"{'gloo/rp':>9}{'rp/raw':>8}"
    )
    records = []
    rotation = 0
    for op in args.op_list:
        for nbytes in args.size_list if op != "barrier" else [0]:
            case = Case(op, max(nbytes, 4), rank, size, gloo, comm)
            impls = case.impls()
            order = list(names[rotation % 3 :] + names[: rotation % 3])
            rotation += 1
            med: dict[str, float | None] = {}
            rec: dict[str, Any] = {"op": op, "bytes": nbytes, "samples": {}}
            for name in order:
                fn = impls[name]
                if fn is None:
                    med[name] = None
                    continue
                s = measure(case, name, fn, args.repeats, gloo, args.isolated)
                rec["samples"][name] = s
                med[name] = statistics.median(s)
            rec["median_s"] = med
            records.append(rec)

            def us(v: float | None) -> str:
                return f"{v * 1e6:.1f}" if v is not None else "-"

            rp, gl, raw = med["ringpress"], med["gloo"], med["raw"]
            ratio_g = f"{gl / rp:.2f}" if rp and gl else "-"
            ratio_r = f"{rp / raw:.2f}" if rp and raw else "-"
            say(
                f"{op:<15}{fmt_bytes(nbytes) if op != 'barrier' else '-':>9}{us(raw):>11}"
                f"{us(rp):>12}{us(gl):>14}{ratio_g:>9}{ratio_r:>8}"
            )
    comm.close()
    dist.destroy_process_group()
    if not rank0:
        return None
    results = {
        "benchmark": "collectives",
        "nranks": size,
        "native": rt.NATIVE,
        "config": {
            "repeats": args.repeats,
            "sizes": args.size_list,
            "ops": args.op_list,
            "isolated": args.isolated,
        },
        "machine": machine_info(()),
        "versions": versions({}, ("ringpress", "torch")),
        "command": " ".join(sys.argv),
        "records": records,
    }
    tag = ("_quick" if args.quick else "") + ("_isolated" if args.isolated else "")
    path = args.json or results_dir() / f"collectives_np{size}{tag}.json"
    write_json(results, path)
    return results


def _rank_argv(args: argparse.Namespace) -> list[str]:
    out = ["--launcher", "env", "--ops", ",".join(args.op_list), "--repeats", str(args.repeats)]
    out += ["--sizes", ",".join(str(s) for s in args.size_list)]
    if args.json is not None:
        out += ["--json", str(args.json.resolve())]
    if args.quick:
        out.append("--quick")
    if args.isolated:
        out.append("--isolated")
    return out


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    return spawn_or_run(args, argv, prog, "collectives", lambda: _rank_argv(args), run_rank)
