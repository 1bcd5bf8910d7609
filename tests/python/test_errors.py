"""The error model: C++ ENFORCE errors surface as ringpress.errors classes with their context."""

import builtins
import pickle

import pytest
import ringpress
from ringpress import _core, errors

KINDS = {
    "UsageError": (errors.UsageError, ValueError),
    "TransportError": (errors.TransportError, ConnectionError),
    "TimeoutError": (errors.TimeoutError, builtins.TimeoutError),
    "WireFormatError": (errors.WireFormatError, ValueError),
    "CodecError": (errors.CodecError, errors.RingpressError),
    "InternalError": (errors.InternalError, RuntimeError),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_maps_to_its_class_with_context(kind):
    cls, builtin = KINDS[kind]
    with pytest.raises(cls) as info:
        _core._testing.raise_error(kind, "the cause", rank=2, peer=3, op="allreduce")
    e = info.value
    assert type(e) is cls
    assert isinstance(e, errors.RingpressError) and isinstance(e, builtin)
    assert (e.rank, e.peer, e.op, e.detail) == (2, 3, "allreduce", "the cause")
    assert str(e).startswith("allreduce failed on rank 2 (peer 3): the cause [")


def test_enforce_eq_message_carries_both_values():
    with pytest.raises(ringpress.UsageError) as info:
        _core._testing.enforce_eq(4096, 8192, rank=1, peer=0, op="allgather")
    msg = str(info.value)
    assert "4096" in msg and "8192" in msg and "sizes differ across ranks" in msg
    assert info.value.rank == 1 and info.value.peer == 0 and info.value.op == "allgather"
    _core._testing.enforce_eq(5, 5)  # equal values do not raise


def test_context_absent_outside_a_communicator():
    with pytest.raises(ringpress.CodecError) as info:
        _core._testing.raise_error("CodecError", "zstd failed")
    assert info.value.rank == -1 and info.value.peer == -1 and info.value.op == ""


def test_errors_from_real_entry_points_carry_the_op():
    src = bytearray(16)
    with pytest.raises(ringpress.UsageError) as info:
        _core.byte_shuffle(src, bytearray(8), 4)
    assert info.value.op == "byte_shuffle" and "16 vs 8" in str(info.value)
    with pytest.raises(ringpress.UsageError, match="element size"):
        _core.byte_shuffle(src, bytearray(16), 0)
    with pytest.raises(ringpress.UsageError, match="writable"):
        _core.byte_shuffle(src, b"x" * 16, 4)  # bytes are read-only
    with pytest.raises(ringpress.UsageError, match="buffer-protocol"):
        _core.byte_shuffle([1, 2, 3], bytearray(3), 1)


def test_errors_pickle_with_context():
    e = errors.TransportError("boom", rank=0, peer=1, op="tcp.recv", detail="reset")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is errors.TransportError
    assert (str(e2), e2.rank, e2.peer, e2.op, e2.detail) == ("boom", 0, 1, "tcp.recv", "reset")


def test_public_names():
    for name in (
        "RingpressError",
        "TransportError",
        "TimeoutError",
        "WireFormatError",
        "CodecError",
        "UsageError",
    ):
        assert getattr(ringpress, name) is getattr(errors, name)
        assert issubclass(getattr(errors, name), errors.RingpressError)
