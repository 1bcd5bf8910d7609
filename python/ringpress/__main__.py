"""The ``ringpress`` command line.

``ringpress info``   what this build contains and what it chose on this machine

Other subcommands come from installed packages through the ``ringpress.cli`` entry-point group
(``NAME = "module:function"``, called as ``function(argv, prog="ringpress NAME")`` and returning an
exit code); the runtime imports none of them by name. The benchmarks (``ringpress-bench``, the
``bench/`` folder of a checkout) register ``ringpress bench`` (ringpress against gloo / Open MPI /
blosc2 / torch) and ``ringpress kernels`` (shuffle kernel speed per SIMD level).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

ENTRY_POINT_GROUP = "ringpress.cli"
# Subcommands this command knows come from a package that is not part of the runtime.
NOT_INSTALLED = {
    "bench": "the benchmarks",
    "kernels": "the shuffle kernel benchmark",
}
INSTALL_HINT = (
    "they are a separate package, ringpress-bench: 'pip install ./bench' in a ringpress checkout "
    "('make demo' and 'make test' install it)"
)


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


def plugins() -> dict[str, Any]:
    """The subcommands installed packages register: name -> entry point (not loaded yet)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _plugin_help(ep: Any) -> str:
    try:
        fn = ep.load()
    except Exception as e:  # a broken plugin must not break `ringpress --help`
        return f"(from {ep.value}; failed to load: {type(e).__name__}: {e})"
    text = getattr(fn, "help", None) or (fn.__doc__ or "").strip().split("\n")[0]
    return text or f"(from {ep.value})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    found = plugins()
    name = argv[0] if argv else ""
    if name in found:  # its own parser, with subcommands of its own
        try:
            run = found[name].load()
        except ImportError as e:  # registered, but its package is gone or broken
            hint = f"cannot load {found[name].value} ({e}); {INSTALL_HINT}"
            print(f"ringpress {name}: {hint}", file=sys.stderr)
            return 2
        return int(run(argv[1:], prog=f"ringpress {name}") or 0)
    if name in NOT_INSTALLED:
        print(
            f"ringpress {name}: not installed here ({NOT_INSTALLED[name]}); {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog="ringpress", description="ringpress command line")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print build_info() (what was built, what runs here)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)
    helping = not argv or "-h" in argv or "--help" in argv  # else no need to load the plugins
    for plugin_name, ep in sorted(found.items()):
        if plugin_name != "info":
            sub.add_parser(plugin_name, help=_plugin_help(ep) if helping else "", add_help=False)
    for missing, what in NOT_INSTALLED.items():
        if missing not in found:
            sub.add_parser(missing, help=f"{what} (not installed: pip install ./bench)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
