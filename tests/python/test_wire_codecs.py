"""The wire codecs' payloads (docs/wire-format.md, "Wire codec payloads") against the golden
payloads of tests/golden/wire_codecs/: every payload decodes to its recorded output, our own
encoders write the recorded bytes at every SIMD level, and hostile payloads raise WireFormatError."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import ringpress
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ringpress import _core

GOLDEN = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden", "wire_codecs"
)
MANIFEST = json.load(open(os.path.join(GOLDEN, "manifest.json")))
# libzstd/liblz4 may write other (equally valid) bytes in other versions: for lossless only the
# decoding is a promise. Every other codec is our own code and must write the same bytes.
OWN_ENCODERS = sorted(n for n, e in MANIFEST.items() if e["codec"] != "lossless")


def read(name: str, kind: str) -> bytes:
    with open(os.path.join(GOLDEN, f"{name}.{kind}"), "rb") as f:
        return f.read()


def test_every_builtin_lossy_codec_has_a_golden():
    covered = {e["codec"] for e in MANIFEST.values()}
    assert {c["name"] for c in ringpress.wire_codecs() if c["name"] != "none"} <= covered


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_payload_decodes_to_its_recorded_output(name):
    e = MANIFEST[name]
    for kind in ("input", "payload", "decoded"):
        assert hashlib.sha256(read(name, kind)).hexdigest() == e[f"{kind}_sha256"], (name, kind)
    out = _core.wire_decode(
        e["codec"], read(name, "payload"), e["count"], e["dtype"], e["op"], **e["params"]
    )
    assert out == read(name, "decoded")
    exact = {c["name"]: c["exact"] for c in ringpress.wire_codecs()}[e["codec"]]
    if exact:
        assert out == read(name, "input")


@pytest.mark.parametrize("name", OWN_ENCODERS)
def test_encoder_writes_the_golden_bytes(name):
    e = MANIFEST[name]
    x = np.frombuffer(read(name, "input"), dtype=e["dtype"])
    assert _core.wire_encode(e["codec"], x, e["dtype"], e["op"], seed=0, **e["params"]) == read(
        name, "payload"
    )


def test_every_simd_level_writes_the_same_bytes():
    info = ringpress.build_info()
    order = ["generic", "sse2", "avx2", "avx512"]
    levels = [lv for lv in info["simd_built"] if order.index(lv) <= order.index(info["simd_best"])]
    script = r"""
import json, sys, numpy as np
from ringpress import _core
m = json.load(open(sys.argv[1] + "/manifest.json"))
out = {}
for name in json.loads(sys.argv[2]):
    e = m[name]
    x = np.fromfile(sys.argv[1] + "/" + name + ".input", dtype=e["dtype"])
    out[name] = _core.wire_encode(e["codec"], x, e["dtype"], e["op"], seed=0, **e["params"]).hex()
print(json.dumps(out))
"""
    for level in levels:
        env = dict(os.environ, RINGPRESS_SIMD=level)
        r = subprocess.run(
            [sys.executable, "-c", script, GOLDEN, json.dumps(OWN_ENCODERS)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        for name in OWN_ENCODERS:
            assert bytes.fromhex(got[name]) == read(name, "payload"), (level, name)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_truncated_or_padded_payloads_are_refused(name):
    e = MANIFEST[name]
    p = read(name, "payload")
    for bad in (p[:-1], p + b"\0", p[: len(p) // 2], b""):
        with pytest.raises(ringpress.WireFormatError):
            _core.wire_decode(e["codec"], bad, e["count"], e["dtype"], e["op"], **e["params"])


def test_golden_parameters_are_each_codecs_own():
    """A golden's parameters are ones its codec reads (wire_codecs()["params"]), and every
    parameter some codec reads is set by some golden (so each one that changes payload bytes is
    pinned down)."""
    reads = {c["name"]: set(c["params"]) for c in ringpress.wire_codecs()}
    used = set()
    for e in MANIFEST.values():
        assert set(e["params"]) <= reads[e["codec"]], e
        used |= set(e["params"])
    assert set().union(*reads.values()) <= used


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codec=st.sampled_from([c["name"] for c in ringpress.wire_codecs() if c["name"] != "none"]),
    payload=st.binary(max_size=600),
    count=st.integers(min_value=0, max_value=300),
    values=st.sampled_from(["fp32", "fp16"]),
)
def test_hostile_payloads_raise_wire_format_errors_only(codec, payload, count, values):
    try:
        out = _core.wire_decode(codec, payload, count, "float32", "sum", block=16, values=values)
    except ringpress.WireFormatError:
        return
    assert len(out) == 4 * count
