"""Per-(node, boot) sequence bookkeeping: duplicates, gaps, and gaps closed by late reports.

Agents number their reports 0, 1, 2, ... per boot. Everything below ``next_seq`` has been
seen except the listed gaps, so memory is bytes per node, not per report:

    seen:   0 1 2 . . 5 6 . 8         next_seq = 9, gaps = [[3, 4], [7, 7]]
    seq 4 → "filled"  (gap [3, 4] becomes [3, 3])
    seq 6 → "duplicate"
    seq 12 → "new", opens gap [9, 11]

A gap row is keyed by (node, boot, first_missing). Shrinking or splitting a gap rewrites
the rows it touches, with the offset of the report that changed it as the version, so the
warehouse's ``seq_gaps`` table always shows the current ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class SeqVerdict(Enum):
    NEW = "new"
    FILLED = "filled"  # a late report that closes (part of) a gap
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class GapRow:
    node_id: str
    boot_id: str
    first_missing: int
    last_missing: int
    first_seen_us: int
    is_open: bool
    version: int  # source offset of the report that produced this row


@dataclass
class NodeSeq:
    next_seq: int = 0
    # [first_missing, last_missing, first_seen_us], sorted by first_missing
    gaps: list[list[int]] = field(default_factory=list)

    def observe(
        self, node_id: str, boot_id: str, seq: int, seen_us: int, offset: int
    ) -> tuple[SeqVerdict, list[GapRow]]:
        def row(lo: int, hi: int, first_seen: int, is_open: bool) -> GapRow:
            return GapRow(node_id, boot_id, lo, hi, first_seen, is_open, offset)

        if seq >= self.next_seq:
            rows = []
            if seq > self.next_seq:
                self.gaps.append([self.next_seq, seq - 1, seen_us])
                rows.append(row(self.next_seq, seq - 1, seen_us, True))
            self.next_seq = seq + 1
            return SeqVerdict.NEW, rows
        i = next((i for i, gap in enumerate(self.gaps) if gap[0] <= seq <= gap[1]), None)
        if i is None:
            return SeqVerdict.DUPLICATE, []
        lo, hi, first_seen = self.gaps[i]
        pieces = [[lo, seq - 1, first_seen]] if seq > lo else []
        if seq < hi:
            pieces.append([seq + 1, hi, first_seen])
        self.gaps[i : i + 1] = pieces
        rows = [row(p[0], p[1], first_seen, True) for p in pieces]
        if seq == lo:  # the row keyed by ``lo`` no longer describes a gap
            rows.append(row(lo, lo, first_seen, False))
        return SeqVerdict.FILLED, rows

    def open_gap_seqs(self) -> int:
        return sum(hi - lo + 1 for lo, hi, _ in self.gaps)
