"""One configuration layer: one table of RINGPRESS_* variables, read in one place, with the
precedence argument > environment > default (docs/configuration.md)."""

import os
import re

import pytest
import ringpress
from ringpress import _core
from ringpress.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_tree = pytest.mark.skipif(
    not os.path.isdir(os.path.join(ROOT, "csrc")), reason="needs the source tree"
)


def solo(**kwargs):
    return ringpress.Communicator(ringpress.HashStore(), 0, 1, **kwargs)


@needs_tree
def test_only_env_cc_reads_the_environment_in_cpp():
    readers = []
    for d, _, files in os.walk(os.path.join(ROOT, "csrc")):
        for f in files:
            if f.endswith((".cc", ".h", ".cu")):
                text = open(os.path.join(d, f), encoding="utf-8").read()
                if re.search(r"\b(std::)?(secure_)?getenv\s*\(", text):
                    readers.append(os.path.relpath(os.path.join(d, f), ROOT))
    assert readers == [os.path.join("csrc", "common", "env.cc")]


@needs_tree
def test_the_python_runtime_reads_no_ringpress_variable_itself():
    pattern = re.compile(r"(environ\s*(\.get\s*\(|\[)|getenv\s*\()\s*[\"']RINGPRESS_")
    offenders = []
    for d, _, files in os.walk(os.path.join(ROOT, "python", "ringpress")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                if pattern.search(open(path, encoding="utf-8").read()):
                    offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []


@needs_tree
def test_the_docs_list_exactly_the_table():
    doc = open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8").read()
    rows = dict(re.findall(r"^\| `(RINGPRESS_[A-Z_]+)` \| [^|]+ \| ([^|]+) \|", doc, re.M))
    table = {r["name"]: r["default"] for r in _core.env_table()}
    assert set(rows) == set(table)
    for name, default in table.items():
        assert rows[name].strip() == (f"`{default}`" if default else "—"), name


def test_timeout_argument_beats_environment_beats_default(monkeypatch):
    monkeypatch.delenv("RINGPRESS_TIMEOUT", raising=False)
    with solo() as c:
        assert c.timeout == pytest.approx(300.0)
    monkeypatch.setenv("RINGPRESS_TIMEOUT", "7.5")
    with solo() as c:
        assert c.timeout == pytest.approx(7.5)
    with solo(timeout=3) as c:
        assert c.timeout == pytest.approx(3.0)
        c.set_timeout(0.25)
        assert c.timeout == pytest.approx(0.25)
        with pytest.raises(UsageError):
            c.set_timeout(0)


def test_transport_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("RINGPRESS_TRANSPORT", "carrier-pigeon")
    with pytest.raises(UsageError, match="transport"):
        solo()
    with solo(transport="tcp") as c:  # the argument wins: the bad variable is never consulted
        assert c.size == 1


@pytest.mark.parametrize(
    "name, value",
    [
        ("RINGPRESS_TIMEOUT", "soon"),
        ("RINGPRESS_TIMEOUT", "-1"),
        ("RINGPRESS_SHM_RING_BYTES", "0x10"),
        ("RINGPRESS_SPIN_US", "fast"),
        ("RINGPRESS_SPIN_US", "-5"),
        ("RINGPRESS_SPIN_US", "50us"),
    ],
)
def test_a_malformed_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=name):
        solo()


def test_the_retired_millisecond_timeout_is_refused_not_ignored(monkeypatch):
    monkeypatch.setenv("RINGPRESS_TIMEOUT_MS", "20")
    with pytest.raises(UsageError, match="RINGPRESS_TIMEOUT "):
        solo()


def test_compression_default_comes_from_the_table(monkeypatch):
    monkeypatch.delenv("RINGPRESS_COMPRESSION", raising=False)
    assert _core.env_string("RINGPRESS_COMPRESSION") == "none"
    monkeypatch.setenv("RINGPRESS_COMPRESSION", "int8")
    assert _core.env_string("RINGPRESS_COMPRESSION") == "int8"
    with pytest.raises(Exception, match="not in the configuration table"):
        _core.env_raw("RINGPRESS_NO_SUCH_THING")
