"""The agent's on-disk spool (agent/spool.py): order, recovery and the bound."""

from __future__ import annotations

from pathlib import Path

from agent.collectors import GpuUnit
from agent.spool import Spool

T0 = 1_800_000_000_000_000
TICK = 10_000_000
UNIT = GpuUnit("GPU-0000", 0, "H100")


def test_spool_keeps_order_recovers_and_reports_the_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=250, alarm_fraction=0.5, fsync="always")
    for seq in range(3):
        assert spool.put(seq, bytes([seq]) * 100) is (seq < 2)
    assert spool.alarm and spool.dropped == [[2, 2]] and spool.bytes_used == 200
    assert [e.seq for e in spool.pending()] == [0, 1]
    (tmp_path / "00000000000000000009.report.tmp").write_bytes(b"torn")
    spool.remove(0)
    again = Spool(tmp_path, max_bytes=250)  # a restart
    assert again.peek_seq() == 3 and [e.seq for e in again.pending()] == [1]
    assert not list(tmp_path.glob("*.tmp")) and again.dropped == [[2, 2]]
    assert again.pending()[0].read() == b"\x01" * 100
    # A crash after the report file but before state.json: the seq is still not reused.
    (tmp_path / "00000000000000000003.report").write_bytes(b"x")
    assert Spool(tmp_path, max_bytes=250).peek_seq() == 4
