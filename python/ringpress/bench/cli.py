"""``ringpress bench``: ringpress against its peers, side by side in one run.

Subcommands
    allreduce (alias collectives)  ringpress vs gloo vs Open MPI allreduce over a size sweep; alone
                                   it starts its own ranks (--nranks, --link RATE in namespaces),
                                   or it runs as one rank under mpirun / torchrun
    codecs                         lossless codec vs blosc2 / zstandard / lz4 on real gradients
    compressors                    lossy gradient compressors vs torch / numpy
    compressed                     allreduce with each wire compression (and auto) vs gloo plain on
                                   real gradients; run as the ranks of a job, e.g. under
                                   'ringpress bench netns --rate 1gbit -- python -m ringpress.bench compressed'
    train                          DDP training step time, bytes sent and held-out loss per
                                   communication mode (gloo, fp16, PowerSGD, ringpress + hook);
                                   alone, under torchrun, or under 'ringpress bench netns'
    netns                          the namespace harness itself (--check, --cleanup, -- CMD)

Every benchmark prints a table with the ratios, writes a JSON record (machine, versions, command,
configuration, every sample) and a PNG plot (skipped with a note without matplotlib) under
``bench/results/`` in a source checkout or ``./ringpress-results/`` elsewhere, and shows a progress
bar on stderr (rank 0, a terminal, unless --no-progress). A missing optional peer (torch, mpi4py,
blosc2, ...) is skipped with a one-line note. Bad arguments exit 2 with a usage message; Ctrl-C
stops every rank, removes namespaces and shared memory, and exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ._common import ArgParser

PROG = "ringpress bench"
SUBCOMMANDS = {
    "allreduce": ("allreduce", "ringpress vs gloo vs Open MPI allreduce, size sweep"),
    "collectives": ("allreduce", "alias of allreduce"),
    "codecs": ("codecs", "lossless codec vs blosc2 / zstandard / lz4 on real gradients"),
    "compressors": ("compressors", "gradient compressors vs torch / numpy peers"),
    "compressed": (
        "compressed",
        "compressed allreduce modes vs gloo on real gradients (run as ranks)",
    ),
    "train": ("train", "DDP step time, bytes and held-out loss per compression mode"),
    "netns": ("netns", "namespace harness: --check, --cleanup, or -- CMD"),
}


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    listing = "\n".join(f"  {name:<12} {text}" for name, (_, text) in SUBCOMMANDS.items())
    ap = ArgParser(
        prog=prog,
        description="Benchmarks: ringpress against its peers, side by side in one run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"subcommands:\n{listing}\n\n'{prog} SUBCOMMAND --help' lists its options. "
        f"examples:\n  {prog} allreduce --quick\n  mpirun -n 2 {prog} allreduce\n"
        f"  {prog} allreduce --link 1gbit --sizes 4K,1M,16M   (root)\n  {prog} codecs --repeats 5",
    )
    ap.add_argument("subcommand", choices=list(SUBCOMMANDS), metavar="SUBCOMMAND", help="see below")
    if argv[:1] in (["-h"], ["--help"]):
        ap.parse_args(argv[:1])  # prints the help, exits 0
    if not argv or argv[0].startswith("-"):
        ap.error(f"give a subcommand first: {', '.join(SUBCOMMANDS)}")
    sub = ap.parse_args(argv[:1]).subcommand
    module_name = SUBCOMMANDS[sub][0]
    sub_prog = f"{prog} {sub}"
    module = importlib.import_module(f"{__package__}.{module_name}")
    try:
        return int(module.main(argv[1:], prog=sub_prog) or 0)
    except KeyboardInterrupt:
        print(f"\n{sub_prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # | head
        return 0


if __name__ == "__main__":
    sys.exit(main())
