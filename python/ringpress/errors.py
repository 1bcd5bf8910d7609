"""Exception hierarchy of ringpress.

Every error raised by the native core arrives as one of these classes (the C++ ``ringpress::Error``
kinds map one to one), carrying where it happened:

``rank``    this process's rank, or -1 outside a communicator
``peer``    the remote rank involved, or -1
``op``      the operation, e.g. ``"allreduce"``, ``"decompress"``
``detail``  the cause without the context prefix

Each class also derives from the closest built-in exception so generic handlers keep working
(``except ValueError`` catches a bad argument, ``except TimeoutError`` a ringpress timeout).
docs/errors.md says which errors leave a communicator usable.
"""

from __future__ import annotations

import builtins

__all__ = [
    "CodecError",
    "InternalError",
    "RingpressError",
    "TimeoutError",
    "TransportError",
    "UsageError",
    "WireFormatError",
]


class RingpressError(Exception):
    """Base class of every ringpress error."""

    def __init__(
        self,
        message: str = "",
        *,
        rank: int = -1,
        peer: int = -1,
        op: str = "",
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.peer = peer
        self.op = op
        self.detail = message if detail is None else detail

    def __reduce__(self):  # keep the context when pickled across processes
        return (_rebuild, (type(self), str(self), self.rank, self.peer, self.op, self.detail))


def _rebuild(cls, message, rank, peer, op, detail):
    return cls(message, rank=rank, peer=peer, op=op, detail=detail)


class UsageError(RingpressError, ValueError):
    """Bad arguments: wrong dtype, sizes that differ across ranks, unknown option."""


class TransportError(RingpressError, ConnectionError):
    """A connection failed: peer died, connection reset, protocol violation."""


class TimeoutError(RingpressError, builtins.TimeoutError):
    """An operation did not complete within its timeout."""


class WireFormatError(RingpressError, ValueError):
    """A frame is corrupt, truncated, of an unsupported version, or fails its checksum."""


class CodecError(RingpressError):
    """A codec failed (compressor library error, output buffer too small, ...)."""


class InternalError(RingpressError, RuntimeError):
    """A broken invariant inside ringpress: a bug, please report it with the message."""
