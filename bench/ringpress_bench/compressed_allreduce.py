"""Compressed allreduce vs gloo plain, on real fp32 gradients (issue 5's benchmark).

Run as the ranks of a job (env launcher: RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT), usually
inside the namespace harness over a shaped link::

    ringpress bench netns --nranks 2 --rate 1gbit -- python -m ringpress_bench compressed
    torchrun --nproc-per-node 2 -m ringpress_bench compressed --size 16M      # loopback

Every mode allreduces the same buffer (real gradients of the char-LSTM, ``gradients.py``,
tiled to ``--size`` and shifted per rank) ``--repeats`` times; time = median over repeats of the
slowest rank. Modes: gloo (torch.distributed plain), plain (ringpress, no compression), lossless,
bf16, int8, topk (``--ratio`` with error feedback: the residual persists across repeats), auto
(allowed: lossless,bf16,int8) and auto+topk. Printed: time, speedup vs gloo and vs ringpress
plain, relative L2 error against the exact sum, wire bytes per rank, and what auto chose.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

from ._common import fmt_bytes, machine_info, parse_size, results_dir, write_json
from .runner import ArgParser

MODES = ("gloo", "plain", "lossless", "bf16", "int8", "topk", "auto", "auto+topk")


def _args(argv, prog):
    ap = ArgParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="64M", help="bytes of float32 per allreduce (default 64M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--ratio", type=float, default=0.01, help="topk fraction (default 0.01)")
    ap.add_argument("--json", default=None, help="record path (default: results dir)")
    args = ap.parse_args(argv)
    args.nbytes = parse_size(args.size)
    args.mode_list = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.mode_list if m not in MODES]
    if bad or not args.mode_list:
        ap.error(f"unknown modes {bad}; choose from {','.join(MODES)}")
    if args.repeats < 1 or not 0 < args.ratio <= 1:
        ap.error("--repeats must be >= 1 and --ratio in (0, 1]")
    for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if v not in os.environ:
            ap.error(f"run it as the ranks of a job ({v} is not set): see '{prog} --help'")
    return args


def main(argv=None, prog="ringpress bench compressed") -> int:
    args = _args(argv, prog)
    import ringpress

    from .gradients import fp32_gradients

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    n = args.nbytes // 4
    # The gradient cache first: if it is missing, one rank trains the model while the others
    # sleep on the cache's lock (gradients.py). Waiting in a barrier instead, with 4 ranks on 2
    # cores spinning, outlasted the communicator's timeout.
    g = fp32_gradients(verbose=True)  # only the rank that trains prints
    # gloo before ringpress: its store takes MASTER_PORT + 1, which a ringpress rank's listener
    # (an ephemeral port, kept for the communicator's life) could otherwise have taken.
    gloo = None
    if "gloo" in args.mode_list:
        try:
            import torch
            import torch.distributed as dist

            url = f"tcp://{os.environ['MASTER_ADDR']}:{int(os.environ['MASTER_PORT']) + 1}"
            dist.init_process_group(
                "gloo",
                init_method=url,
                rank=rank,
                world_size=size,
                timeout=datetime.timedelta(seconds=300),
            )
            gloo = (torch, dist)
        except Exception as e:
            if rank == 0:
                print(f"gloo: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    comm = ringpress.Communicator.from_env()
    base = np.resize(np.roll(g, 7919 * rank), n).astype(np.float32)
    exact = base.astype(np.float64)
    comm.allreduce(exact)  # the exact sum (float64)
    rows = []
    residual = np.zeros(n, np.float32)
    for mode in args.mode_list:
        if mode == "gloo" and gloo is None:
            continue
        times, choices = [], []
        sent0 = comm.stats()["bytes_sent"]
        for rep in range(args.repeats + 1):  # the first is a warm-up
            x = base.copy()
            comm.barrier()
            t0 = time.perf_counter()
            if mode == "gloo":
                gloo[1].all_reduce(gloo[0].from_numpy(x))
            elif mode == "plain":
                comm.allreduce(x)
            elif mode in ("lossless", "bf16", "int8"):
                comm.allreduce(x, compression=mode)
            elif mode == "topk":
                comm.allreduce(x, compression="topk", ratio=args.ratio, residual=residual)
            elif mode == "auto":
                comm.allreduce(x, compression="auto", allow="lossless,bf16,int8")
            else:
                comm.allreduce(
                    x,
                    compression="auto",
                    allow="lossless,bf16,int8,topk",
                    ratio=args.ratio,
                    residual=residual,
                )
            dt = np.array([time.perf_counter() - t0])
            comm.allreduce(dt, op="max")
            if rep:
                times.append(float(dt[0]))
                if mode.startswith("auto"):
                    choices.append(comm.stats()["auto"]["last"])
        wire = (comm.stats()["bytes_sent"] - sent0) / (args.repeats + 1)
        err = float(np.linalg.norm(x - exact) / np.linalg.norm(exact))
        rows.append(
            {
                "mode": mode,
                "samples_s": times,
                "median_s": float(np.median(times)),
                "rel_err": err,
                "wire_bytes_per_rank": wire,
                "auto_choices": choices,
            }
        )
    ref = {r["mode"]: r["median_s"] for r in rows}
    for r in rows:
        r["speedup_vs_gloo"] = ref["gloo"] / r["median_s"] if "gloo" in ref else None
        r["speedup_vs_plain"] = ref["plain"] / r["median_s"] if "plain" in ref else None
    if rank == 0:
        rate = os.environ.get("RINGPRESS_NETNS_RATE", "none")
        print(
            f"compressed allreduce, {size} ranks, {fmt_bytes(args.nbytes)} real fp32 gradients, "
            f"link {rate}, median of {args.repeats} (slowest rank)"
        )
        print(
            f"{'mode':>10} | {'time':>9} | {'vs gloo':>8} | {'vs plain':>8} | {'rel err':>8} | "
            f"{'wire/rank':>10} | auto chose"
        )
        for r in rows:
            vg = f"{r['speedup_vs_gloo']:.2f}x" if r["speedup_vs_gloo"] else "-"
            vp = f"{r['speedup_vs_plain']:.2f}x" if r["speedup_vs_plain"] else "-"
            ch = ",".join(sorted(set(r["auto_choices"]))) if r["auto_choices"] else ""
            print(
                f"{r['mode']:>10} | {r['median_s'] * 1e3:7.1f}ms | {vg:>8} | {vp:>8} | "
                f"{r['rel_err']:8.1e} | {fmt_bytes(int(r['wire_bytes_per_rank'])):>10} | {ch}"
            )
        rec = {
            "benchmark": "compressed_allreduce",
            "machine": machine_info(),
            "ranks": size,
            "nbytes": args.nbytes,
            "link": rate,
            "ratio": args.ratio,
            "rows": rows,
            "auto_stats": comm.stats()["auto"],
        }
        write_json(rec, Path(args.json or results_dir() / f"compressed_np{size}_{rate}.json"))
    comm.close()
    if gloo is not None:
        gloo[1].destroy_process_group()
    return 0
