"""The ``ringpress`` command line.

``ringpress info``   what this build contains and what it chose on this machine
``ringpress kernels`` shuffle kernel speed at every SIMD level this machine supports
``ringpress bench``   ringpress against gloo / Open MPI / blosc2 / torch (see ``ringpress.bench``)
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    import ringpress

    info = ringpress.build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, list):
            value = " ".join(value)
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_kernels(args: argparse.Namespace) -> int:
    from . import kernels

    return kernels.main(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser, with subcommands of its own
        from .bench.cli import main as bench_main

        return bench_main(argv[1:], prog="ringpress bench")
    parser = argparse.ArgumentParser(prog="ringpress", description="ringpress command line")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print build_info() (what was built, what runs here)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)
    kern = sub.add_parser("kernels", help="shuffle kernel speed per SIMD level")
    kern.add_argument("--size-mib", type=int, default=64, help="buffer size (default 64 MiB)")
    kern.add_argument("--repeats", type=int, default=7, help="timed repeats, median reported")
    kern.set_defaults(func=_cmd_kernels)
    sub.add_parser(
        "bench",
        help="benchmarks against the peers: allreduce (gloo, Open MPI), codecs (blosc2), "
        "compressors (torch); 'ringpress bench --help'",
        add_help=False,
    )
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
