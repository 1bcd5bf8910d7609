"""``python -m ringpress.bench SUBCOMMAND ...``: the same as ``ringpress bench SUBCOMMAND ...``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ringpress.bench"))
