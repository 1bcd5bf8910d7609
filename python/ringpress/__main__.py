"""The ``ringpress`` command line.

``ringpress info``   what this build contains and what it chose on this machine
``ringpress demo``   the README's main job
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ringpress", description="ringpress command line")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print build_info() (what was built, what runs here)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)
    demo = sub.add_parser("demo", help="the README's main job")
    demo.add_argument("--size-mib", type=int, default=64, help="buffer size (default 64 MiB)")
    demo.add_argument("--repeats", type=int, default=7, help="timed repeats, median reported")
    demo.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
