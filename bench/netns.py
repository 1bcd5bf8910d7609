"""Moved to ``ringpress.bench.netns`` (installed with ringpress; ``ringpress bench --help``).

This module *is* that one (it replaces itself in ``sys.modules``), so ``import bench.netns`` and
``python -m bench.netns`` keep working in a source checkout.
"""

import sys

from ringpress.bench import netns as _impl

if __name__ == "__main__":
    sys.exit(_impl.main(prog="python -m bench.netns"))
else:
    sys.modules[__name__] = _impl
