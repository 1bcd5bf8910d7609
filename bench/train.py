"""Moved to ``ringpress.bench.train`` (installed with ringpress; ``ringpress bench --help``).

This module *is* that one (it replaces itself in ``sys.modules``), so ``import bench.train`` and
``python -m bench.train`` keep working in a source checkout.
"""

import sys

from ringpress.bench import train as _impl

if __name__ == "__main__":
    sys.exit(_impl.main(prog="python -m bench.train"))
else:
    sys.modules[__name__] = _impl
