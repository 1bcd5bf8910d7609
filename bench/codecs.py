"""Moved to ``ringpress.bench.codecs`` (installed with ringpress; ``ringpress bench --help``).

This module *is* that one (it replaces itself in ``sys.modules``), so ``import bench.codecs`` and
``python -m bench.codecs`` keep working in a source checkout.
"""

import sys

from ringpress.bench import codecs as _impl

if __name__ == "__main__":
    sys.exit(_impl.main(prog="python -m bench.codecs"))
else:
    sys.modules[__name__] = _impl
