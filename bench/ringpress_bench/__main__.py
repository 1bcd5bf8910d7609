"""``python -m ringpress_bench SUBCOMMAND ...``: the same as ``ringpress bench SUBCOMMAND ...``."""

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ringpress_bench"))
