"""The hot path's string kernels against plain Python: interning and the name rule."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.identity import _NAME
from streams.processing.hotpath import strings as kernels

NAME_BYTES = b"aZ09._:/- \x00\xff\xc3"


def _column(strings: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    buf = np.frombuffer(b"".join(strings) or b"\x00", np.uint8)
    length = np.array([len(s) for s in strings], np.int64)
    off = np.zeros(len(strings), np.int64)
    np.cumsum(length[:-1], out=off[1:])
    return buf, off, length


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=20), min_size=1, max_size=8),
    st.lists(st.integers(0, 7), min_size=1, max_size=400),
    st.integers(0, 300),
)
def test_intern_strings_gives_first_appearance_ids(pool, picks, distinct_extra):
    # Runs of one string (the shortcut), strings that are prefixes of others, the empty
    # string, and enough distinct ones to grow the table several times.
    strings = [pool[i % len(pool)] for i in picks]
    strings += [b"x%d" % i for i in range(distinct_extra)] + strings[:50]
    buf, off, length = _column(strings)
    ids, first = kernels.intern_strings(buf, off, length)
    expected: dict[bytes, int] = {}
    for s in strings:
        expected.setdefault(s, len(expected))
    assert ids.tolist() == [expected[s] for s in strings]
    assert [strings[i] for i in first.tolist()] == list(expected)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=140).map(lambda b: bytes(NAME_BYTES[x % len(NAME_BYTES)] for x in b)))
def test_name_check_is_the_validators_rule(raw):
    buf, _, _ = _column([b"#", raw])  # at an offset, after another string
    _, ok = kernels.name_hash(buf, 1, len(raw))
    text = raw.decode("latin-1")
    assert ok == (_NAME.fullmatch(text) is not None and text.isascii())


def test_equal_strings_hash_equal_wherever_they_lie():
    for n in (0, 1, 7, 8, 9, 16, 40):
        s = bytes(range(65, 65 + n))
        buf, _, _ = _column([b"?", s, b"??", s])
        assert kernels.hash_bytes(buf, 1, n) == kernels.hash_bytes(buf, 3 + n, n)
        if n:
            assert kernels.hash_bytes(buf, 1, n) != kernels.hash_bytes(buf, 1, n - 1)


def test_the_warm_up_compiles_every_kernel_the_worker_calls():
    """In a fresh interpreter (this one may have compiled them in other tests): after
    warm_up(), every public kernel of streams/ has a compiled signature, so none compiles
    inside the first batch (issue 19: nine used to)."""
    import subprocess
    import sys

    script = """
import importlib, pkgutil, streams
from numba.core.registry import CPUDispatcher
from streams.processing.hotpath.warmup import warm_up
warm_up()
# crc32c is called only from parse_records, compiled into it.
for info in pkgutil.walk_packages(streams.__path__, "streams."):
    module = importlib.import_module(info.name)
    for name, obj in vars(module).items():
        # Helpers only kernels call (private, or inline="always": compiled into their
        # callers) are never called alone.
        if (isinstance(obj, CPUDispatcher) and obj.__module__ == module.__name__
                and not name.startswith("_") and obj.targetoptions.get("inline") != "always"
                and name != "crc32c" and not obj.signatures):
            print(f"{module.__name__}.{name}")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], f"not compiled by the warm-up: {done.stdout.split()}"
