"""The Horovod-style MNIST script on ringpress against the same training on torch DDP with gloo.

Run as the ranks of a job (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT), from a checkout::

    torchrun --nproc-per-node 2 -m ringpress_bench horovod                      # loopback
    ringpress bench netns --nranks 2 --rate 1gbit -- python -m ringpress_bench horovod

After one untimed run of the script (warm-up), the modes run in turn ``--repeats`` times
(alternating, so drift in the machine's load hits all):
    ringpress        examples/horovod_mnist.py itself (``--script``), started in this process by
                     ``runpy`` with ``--epochs 1``: ``import ringpress.horovod.torch as hvd``,
                     ``hvd.DistributedOptimizer``, ``hvd.init()``/``hvd.shutdown()`` each run
    ringpress-fp16   the same with ``--fp16-allreduce`` (``hvd.Compression.fp16``)
    gloo             the same model (784-h-h-10 MLP), data (the script's synthetic MNIST, its
                     DistributedSampler shards), batch, SGD and learning rate, in DDP on a gloo
                     group: what the script would be on plain torch.distributed
    gloo-fp16        that with torch's ``fp16_compress_hook``
A step is zero_grad, forward, backward and optimizer.step (the communication, overlapped with
backward or not, included), timed on each rank with ``time.perf_counter`` as the script does;
the step time of a run is the median over its steps (the first 5 skipped) of the slowest rank's
time; a mode's is the median over repeats. Printed: step time, gloo's / this mode's (speedup),
and the test accuracy each run reached. JSON in bench/results/horovod_mnist_<link>.json.
"""

from __future__ import annotations

import datetime
import gc
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import machine_info, repo_root, results_dir, write_json
from .runner import ArgParser, UsageExit

MODES = ("gloo", "ringpress", "gloo-fp16", "ringpress-fp16")
SKIP = 5  # warm-up steps left out of a run's median


def _args(argv: list[str] | None, prog: str) -> Any:
    ap = ArgParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--script", default=None, help="default: examples/horovod_mnist.py")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each mode (default 3)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--batch-size", type=int, default=32, help="per rank (the script's default)")
    ap.add_argument("--hidden", type=int, default=128, help="the script's --hidden")
    ap.add_argument("--train-samples", type=int, default=4096)
    ap.add_argument("--json", default=None, help="record path (default: results dir)")
    args = ap.parse_args(argv)
    args.mode_list = [m for m in args.modes.split(",") if m]
    if not args.mode_list or any(m not in MODES for m in args.mode_list) or args.repeats < 1:
        ap.error(f"--modes: choose from {','.join(MODES)}; --repeats >= 1")
    for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if v not in os.environ:
            ap.error(f"run it as the ranks of a job ({v} is not set): see '{prog} --help'")
    if args.script is None:
        root = repo_root()
        if root is None:
            raise UsageExit("run it from a ringpress checkout, or give --script PATH")
        args.script = str(root / "examples" / "horovod_mnist.py")
    if not Path(args.script).is_file():
        raise UsageExit(f"--script {args.script}: no such file")
    return args


def _script_argv(args: Any, fp16: bool) -> list[str]:
    argv = [
        args.script,
        "--epochs",
        "1",
        "--batch-size",
        str(args.batch_size),
        "--hidden",
        str(args.hidden),
        "--train-samples",
        str(args.train_samples),
    ]
    return [*argv, "--fp16-allreduce"] if fp16 else argv


def _run_script(args: Any, fp16: bool) -> tuple[list[float], float, dict[str, Any]]:
    """The example, unchanged, in this process: its step times, final test accuracy, globals."""
    saved = sys.argv
    sys.argv = _script_argv(args, fp16)
    try:
        g = runpy.run_path(args.script, run_name="__main__")
    finally:
        sys.argv = saved
    return list(g["step_times"]), float(g["accuracy"]), g


def _run_gloo(args: Any, script_globals: dict[str, Any], fp16: bool) -> tuple[list[float], float]:
    """The script's training on DDP + gloo: its data set builder, its Net, its optimizer."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    rank, size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(42)
    data = script_globals["synthetic_mnist"](args.train_samples, seed=1)
    test = script_globals["synthetic_mnist"](1024, seed=2)
    sampler = torch.utils.data.distributed.DistributedSampler(data, size, rank)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, sampler=sampler)
    model = torch.nn.parallel.DistributedDataParallel(script_globals["Net"](args.hidden))
    if fp16:
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.01 * size, momentum=0.5)
    times = []
    for x, y in loader:
        t0 = time.perf_counter()
        opt.zero_grad()
        F.nll_loss(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        shard = torch.arange(rank, len(test), size)
        x, y = test.tensors[0][shard], test.tensors[1][shard]
        acc = torch.tensor([float(model(x).argmax(1).eq(y).sum()), float(len(shard))])
    dist.all_reduce(acc)
    return times, float(acc[0] / acc[1])


def main(argv: list[str] | None = None, prog: str = "ringpress bench horovod") -> int:
    args = _args(argv, prog)
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # as the script does
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # gloo first, on MASTER_PORT + 1: the script's hvd.init() hosts ringpress's store on
    # MASTER_PORT (rank 0) for each of its runs.
    # An explicit store: under torchrun an init_method URL would go to torchrun's agent store.
    timeout = datetime.timedelta(seconds=300)
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]) + 1,
        size,
        is_master=rank == 0,
        timeout=timeout,
    )
    dist.init_process_group("gloo", store=store, rank=rank, world_size=size, timeout=timeout)
    # A warm-up run of the script, untimed (imports, allocator, first connections); its
    # globals give the gloo twin the script's own data set builder and Net.
    script_globals = _run_script(args, False)[2]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.mode_list}
    for rep in range(args.repeats):
        for mode in args.mode_list:
            dist.barrier()
            fp16 = mode.endswith("fp16")
            if mode.startswith("ringpress"):
                times, acc, _ = _run_script(args, fp16)
            else:
                times, acc = _run_gloo(args, script_globals, fp16)
            t = torch.tensor(times, dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank's time, step by step
            step_s = float(np.median(t.numpy()[SKIP:]))
            runs[mode].append({"step_s": step_s, "steps": len(times), "accuracy": acc})
            if rank == 0:
                print(
                    f"  [{rep + 1}/{args.repeats}] {mode:>15}: {step_s * 1e3:7.2f} ms/step, "
                    f"accuracy {acc:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
    rows = []
    for mode in args.mode_list:
        med = float(np.median([r["step_s"] for r in runs[mode]]))
        rows.append({"mode": mode, "step_s": med, "runs": runs[mode]})
    ref = {r["mode"]: r["step_s"] for r in rows}
    if rank == 0:
        link = os.environ.get("RINGPRESS_NETNS_RATE", "loopback")
        print(
            f"Horovod-style MNIST ({Path(args.script).name}), {size} ranks, link {link}, "
            f"batch {args.batch_size}/rank, median of {args.repeats} runs (slowest rank per step)"
        )
        print(f"{'mode':>15} | {'step':>9} | {'gloo / mode':>11} | accuracy")
        for r in rows:
            r["speedup_vs_gloo"] = ref["gloo"] / r["step_s"] if "gloo" in ref else None
            vs = f"{r['speedup_vs_gloo']:.2f}x" if r["speedup_vs_gloo"] else "-"
            accs = ",".join(f"{x['accuracy']:.3f}" for x in r["runs"])
            print(f"{r['mode']:>15} | {r['step_s'] * 1e3:7.2f}ms | {vs:>11} | {accs}")
        rec = {
            "benchmark": "horovod_mnist",
            "machine": machine_info(()),
            "ranks": size,
            "link": link,
            "args": {k: v for k, v in vars(args).items() if k != "mode_list"},
            "rows": rows,
        }
        write_json(rec, Path(args.json or results_dir() / f"horovod_mnist_{link}.json"))
    # The DDP models of the gloo runs (reference cycles) hold the gloo group: collect them first,
    # so destroying the group ends gloo's worker threads now, not while the interpreter
    # finalizes (a thread that frees a tensor then aborts the process; pytorch/pytorch#179291).
    gc.collect()
    dist.destroy_process_group()
    return 0
