"""Moved to ``ringpress.bench._common`` (installed with ringpress; ``ringpress bench --help``).

This module *is* that one (it replaces itself in ``sys.modules``), so ``import bench._common`` and
``python -m bench._common`` keep working in a source checkout.
"""

import sys

from ringpress.bench import _common as _impl

sys.modules[__name__] = _impl
