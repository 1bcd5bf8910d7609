"""
hooks for ringpress's own tests
"""

from __future__ import annotations

import typing

def enforce_eq(
    a: typing.SupportsInt | typing.SupportsIndex,
    b: typing.SupportsInt | typing.SupportsIndex,
    rank: typing.SupportsInt | typing.SupportsIndex = -1,
    peer: typing.SupportsInt | typing.SupportsIndex = -1,
    op: str = "",
) -> None: ...
def raise_error(
    kind: str,
    detail: str,
    rank: typing.SupportsInt | typing.SupportsIndex = -1,
    peer: typing.SupportsInt | typing.SupportsIndex = -1,
    op: str = "",
) -> None: ...
