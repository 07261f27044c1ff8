"""Per-(node, boot) sequence bookkeeping: duplicates, gaps, and gaps closed by late reports.

Agents number their reports 0, 1, 2, ... and (normally) carry the count on across
restarts, so a node's boots share one run of seqs. Everything below ``next_seq`` has been
seen except the listed gaps, so memory is bytes per node, not per report:

    seen:   0 1 2 . . 5 6 . 8         next_seq = 9, gaps = [[3, 4], [7, 7]]
    seq 4 → "filled"  (gap [3, 4] becomes [3, 3])
    seq 6 → "duplicate"
    seq 12 → "new", opens gap [9, 11]

A gap row is keyed by (node, boot, first_missing). Shrinking or splitting a gap rewrites
the rows it touches, with the offset of the report that changed it as the version, so the
warehouse's ``seq_gaps`` table always shows the current ranges.

**Boots.** The seqs missing when a boot is first seen (from where the node's previous boot
stopped, or from 0) are its *lead-in*, a gap of that boot. Any other boot of the node may
still deliver them: the previous boot's spooled reports, or a boot first seen inside the
lead-in (reports arrived out of order). Such a boot *defers* that range to the lead-in's
owner: its reports there close the owner's gap instead of opening gaps of its own, and
which of them it has delivered is kept apart (``deferred_seen``), so a duplicate is
still judged by the report's own (node, boot, seq). Every order of arrival therefore ends
with the seqs never delivered open, each in one gap (``streams/processing/state.py`` links the
boots; ``tests/unit/test_processor.py``).
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
    # [lo, hi]: the seqs that were missing when this boot was first seen, if any
    lead_in: list[int] | None = None
    # [boot_id, lo, hi]: this boot's seqs lo..hi close gaps of that boot (its lead-in)
    defers_to: list[str | int] | None = None
    # [lo, hi] runs of this boot's seqs seen within the deferred range, sorted
    deferred_seen: list[list[int]] = field(default_factory=list)

    def observe(
        self, node_id: str, boot_id: str, seq: int, seen_us: int, offset: int
    ) -> tuple[SeqVerdict, list[GapRow]]:
        """A report of this boot outside any deferred range."""
        if self.defers_to is not None:
            lo, hi = int(self.defers_to[1]), int(self.defers_to[2])
            if self.next_seq <= hi < seq:
                # Seqs lo..hi are never counted here: jump over them, and what is missing
                # below lo is missing from this boot.
                if self.next_seq < lo:
                    self.gaps.append([self.next_seq, lo - 1, seen_us])
                    first = GapRow(node_id, boot_id, self.next_seq, lo - 1, seen_us, True, offset)
                    self.next_seq = hi + 1
                    verdict, rows = self.observe(node_id, boot_id, seq, seen_us, offset)
                    return verdict, [first, *rows]
                self.next_seq = hi + 1
        if seq >= self.next_seq:
            rows = []
            if seq > self.next_seq:
                self.gaps.append([self.next_seq, seq - 1, seen_us])
                rows.append(GapRow(node_id, boot_id, self.next_seq, seq - 1, seen_us, True, offset))
            self.next_seq = seq + 1
            return SeqVerdict.NEW, rows
        rows = self.fill(node_id, boot_id, seq, offset)
        return (SeqVerdict.DUPLICATE, []) if rows is None else (SeqVerdict.FILLED, rows)

    def fill(self, node_id: str, boot_id: str, seq: int, offset: int) -> list[GapRow] | None:
        """Close ``seq`` in this boot's gaps; None if no gap holds it."""
        i = next((i for i, gap in enumerate(self.gaps) if gap[0] <= seq <= gap[1]), None)
        if i is None:
            return None
        lo, hi, first_seen = self.gaps[i]
        pieces = [[lo, seq - 1, first_seen]] if seq > lo else []
        if seq < hi:
            pieces.append([seq + 1, hi, first_seen])
        self.gaps[i : i + 1] = pieces
        rows = [GapRow(node_id, boot_id, p[0], p[1], first_seen, True, offset) for p in pieces]
        if seq == lo:  # the row keyed by ``lo`` no longer describes a gap
            rows.append(GapRow(node_id, boot_id, lo, lo, first_seen, False, offset))
        return rows

    def defers(self, seq: int) -> bool:
        d = self.defers_to
        return d is not None and int(d[1]) <= seq <= int(d[2])

    def see_deferred(self, seq: int) -> bool:
        """Note ``seq`` of the deferred range as delivered by this boot; False if it was."""
        runs = self.deferred_seen
        i = 0
        while i < len(runs) and runs[i][1] < seq - 1:
            i += 1
        if i < len(runs) and runs[i][0] <= seq <= runs[i][1]:
            return False
        if i < len(runs) and runs[i][0] - 1 <= seq <= runs[i][1] + 1:
            runs[i] = [min(runs[i][0], seq), max(runs[i][1], seq)]
            if i + 1 < len(runs) and runs[i + 1][0] == runs[i][1] + 1:  # joins the next run
                runs[i : i + 2] = [[runs[i][0], runs[i + 1][1]]]
        else:
            runs.insert(i, [seq, seq])
        return True

    def open_gap_seqs(self) -> int:
        return sum(hi - lo + 1 for lo, hi, _ in self.gaps)

    def to_row(self) -> list[object]:
        return [self.next_seq, self.gaps, self.lead_in, self.defers_to, self.deferred_seen]

    @classmethod
    def from_row(cls, row: list) -> NodeSeq:
        next_seq, gaps, *linked = row  # snapshots of format 1 have no links
        lead_in, defers_to, deferred_seen = (*linked, None, None, None)[:3]
        return cls(next_seq, [list(g) for g in gaps], lead_in, defers_to, list(deferred_seen or []))
