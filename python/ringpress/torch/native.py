"""The native backend: ``ringpress._c10d``, a C++ ``c10d::Backend`` built against the torch found
at build time (csrc/torch/). :func:`load` says whether this process can use it."""

from __future__ import annotations

from types import ModuleType

import torch


def load() -> tuple[ModuleType | None, str]:
    """(the module, "") when it is built for this torch, else (None, why not)."""
    try:
        from .. import _c10d  # type: ignore[attr-defined]
    except ImportError as e:
        return None, f"the native module ringpress._c10d is not built or does not load ({e})"
    if _c10d.torch_version != torch.__version__:
        return None, (
            f"ringpress._c10d was built for torch {_c10d.torch_version}, this is torch "
            f"{torch.__version__} (rebuild ringpress against it)"
        )
    return _c10d, ""
