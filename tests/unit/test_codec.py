import json
from pathlib import Path

import pytest

from core import reasons
from schemas import (
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    ReportCodec,
    UnknownSchemaError,
    crc64_avro,
    load_released_versions,
)
from tests.factories import make_report

GOLDEN = Path(__file__).parents[2] / "schemas" / "golden"


def test_crc64_avro_matches_the_spec_test_vectors():
    # From the Avro specification's fingerprint test data (Java long values).
    assert crc64_avro(b'"null"') == 7195948357588979594
    assert crc64_avro(b'"int"') == 8247732601305521295


def test_v1_golden_bytes_are_stable_both_ways():
    report = json.loads((GOLDEN / "usage_report.v1.json").read_text())
    golden = (GOLDEN / "usage_report.v1.bin").read_bytes()
    codec = ReportCodec(writer_version=1)
    assert codec.encode(report) == golden
    assert codec.decode(golden) == report


def test_frame_is_single_object_encoding_with_v1_fingerprint():
    v1 = load_released_versions()[0]
    frame = ReportCodec(1).encode(make_report())
    assert frame[:2] == SINGLE_OBJECT_MAGIC
    assert frame[2:10] == v1.fingerprint
    assert v1.fingerprint.hex() == "bd8e58882943a533"  # pinned: v1 is released


def test_round_trip():
    codec = ReportCodec()
    report = make_report(seq=2**40)
    assert codec.decode(codec.encode(report)) == report


def test_unknown_fingerprint_is_a_typed_error():
    frame = bytearray(ReportCodec().encode(make_report()))
    frame[2:10] = b"\x01" * 8
    with pytest.raises(UnknownSchemaError) as info:
        ReportCodec().decode(bytes(frame))
    assert info.value.reason == reasons.UNKNOWN_SCHEMA
    assert info.value.fingerprint == b"\x01" * 8


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", reasons.EMPTY_MESSAGE),
        (b"\x00\x01garbage-bytes", reasons.BAD_MAGIC),
        (b"\xc3\x01\x00", reasons.BAD_MAGIC),
        (b'{"node_id": "json is not avro"}', reasons.BAD_MAGIC),
    ],
)
def test_bad_framing_is_rejected_with_reason(frame, reason):
    with pytest.raises(DecodeError) as info:
        ReportCodec().decode(frame)
    assert info.value.reason == reason


def test_truncated_body_is_undecodable():
    frame = ReportCodec().encode(make_report())
    for cut in (11, len(frame) // 2, len(frame) - 1):
        with pytest.raises(DecodeError) as info:
            ReportCodec().decode(frame[:cut])
        assert info.value.reason == reasons.UNDECODABLE, cut


def test_trailing_bytes_are_rejected():
    frame = ReportCodec().encode(make_report())
    with pytest.raises(DecodeError) as info:
        ReportCodec().decode(frame + b"\x00")
    assert info.value.reason == reasons.TRAILING_BYTES


def test_random_garbage_after_a_valid_header_never_escapes_as_a_foreign_error():
    import random

    header = load_released_versions()[0].header
    rng = random.Random(1)
    codec = ReportCodec()
    for _ in range(2_000):
        body = rng.randbytes(rng.randint(0, 64))
        try:
            codec.decode(header + body)
        except DecodeError as exc:
            assert exc.reason in reasons.ALL
