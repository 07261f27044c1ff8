"""ClickHouse's Native block encoding of the ledger (streams/output/native.py)."""

from warehouse.client import ClickHouseSettings

CH = ClickHouseSettings()


def test_native_block_layout_of_strings_and_integers():
    from streams.output.native import encode_block, uleb128

    assert uleb128(0) == b"\x00" and uleb128(127) == b"\x7f" and uleb128(300) == b"\xac\x02"
    rows = [("é" * 200, 2**64 - 1, 7, 1), ("", 0, 2**32 - 1, 0)]
    block = encode_block(("s", "q", "i", "b"), ("String", "UInt64", "UInt32", "UInt8"), rows)
    assert block == (
        b"\x04\x02"  # columns, rows
        + b"\x01s\x06String"
        + b"\x90\x03"
        + "é".encode() * 200
        + b"\x00"
        + b"\x01q\x06UInt64"
        + b"\xff" * 8
        + b"\x00" * 8
        + b"\x01i\x06UInt32"
        + b"\x07\x00\x00\x00"
        + b"\xff" * 4
        + b"\x01b\x05UInt8"
        + b"\x01\x00"
    )
    assert encode_block(("s",), ("String",), []) == b""


def test_native_array_columns_are_end_offsets_then_all_elements():
    from streams.output.native import encode_block

    rows = [(["ab", "c"], [1, 2]), ([], []), (["d"], [3])]
    block = encode_block(("g", "v"), ("Array(String)", "Array(UInt32)"), rows)
    ends = b"\x02" + b"\x00" * 7 + b"\x02" + b"\x00" * 7 + b"\x03" + b"\x00" * 7
    assert block == (
        b"\x02\x03"
        + b"\x01g\x0dArray(String)"
        + ends
        + b"\x02ab\x01c\x01d"
        + b"\x01v\x0dArray(UInt32)"
        + ends
        + b"\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00"
    )


def test_a_report_has_a_ledger_row_per_gpu_holding_with_its_samples_in_report_order():
    from streams.output.native import LEDGER_COLUMNS, holding_rows
    from tests.factories import TICK_US, make_sample

    t0, t1 = 10**15, 10**15 + TICK_US
    a, b = "GPU-a", "GPU-b"
    samples = [  # tick-major, as agents send them; GPU-b's job ends after the first tick
        make_sample(t0, gpu_uuid=a, allocated_us=1),
        make_sample(t0, gpu_uuid=b, gpu_index=1, allocated_us=2),
        make_sample(t1, gpu_uuid=a, allocated_us=3),
        make_sample(t1, gpu_uuid=b, gpu_index=1, job_id="job-2", allocated_us=4),
    ]
    report = ("node", "boot", 7, "sc1", t0, t1 + TICK_US, 3, 42)
    rows = [
        dict(zip(LEDGER_COLUMNS, r, strict=True))
        for r in holding_rows(report, samples, [0, 0, 1, 1])
    ]
    assert [(r["gpu_uuid"], r["gpu_index"], r["job_id"]) for r in rows] == [
        (a, 0, "job-1"),
        (b, 1, "job-1"),
        (b, 1, "job-2"),
    ]
    assert all(r["seq"] == 7 and r["source_offset"] == 42 for r in rows)
    assert [r["tick_start_us"] for r in rows] == [[t0, t1], [t0], [t1]]
    assert [r["tick_end_us"] for r in rows] == [[t1, t1 + TICK_US], [t1], [t1 + TICK_US]]
    assert [r["allocated_us"] for r in rows] == [[1, 3], [2], [4]]
    assert [r["late"] for r in rows] == [[0, 1], [0], [1]]
