"""The on-disk spool: every report is on disk before it is sent, and leaves only once the
broker acknowledged it.

Layout of the spool folder::

    state.json              {"next_seq": N, "dropped": [[first, last], ...]}
    00000000000000000042.report   one framed report per file, named by seq

Durability (``fsync="always"``, the default): a report file is written to a temporary
name, fsynced, renamed into place, and the folder fsynced, before the report is handed
to the sender; ``state.json`` is replaced the same way after it. A power cut therefore
leaves either the whole report or nothing, never a torn one. ``fsync="never"`` skips the
fsyncs (for tests on tmpfs; a crash of the process alone still loses nothing, only a
crash of the machine can).

Seq: ``next_seq`` is persisted after the report it numbers is spooled, and on start the
spool takes ``max(next_seq, highest spooled seq + 1)``, so a restarted agent continues
and never reuses a seq that may have left the node.

Bound: the spool holds at most ``max_bytes`` of reports. From ``alarm_fraction`` of it on,
the agent raises an alarm (a warning log per report spooled and the gauge
``meter_agent_spool_alarm`` = 1). A report that does not fit is dropped: its seq is
consumed and recorded in ``dropped``, and the log says which seqs were lost. The
pipeline sees the loss as an open seq gap for the node as soon as a later report arrives
(``open_seq_gaps``). Older spooled reports are kept, so what the broker receives when it
returns is the oldest data first, in seq order.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

SUFFIX = ".report"
STATE = "state.json"


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    path: Path
    size: int

    def read(self) -> bytes:
        return self.path.read_bytes()


class Spool:
    def __init__(
        self,
        folder: str | Path,
        max_bytes: int,
        alarm_fraction: float = 0.5,
        fsync: str = "always",
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError("spool max bytes must be positive")
        if not 0 < alarm_fraction <= 1:
            raise ConfigError("spool alarm fraction must be in (0, 1]")
        if fsync not in ("always", "never"):
            raise ConfigError("spool fsync must be 'always' or 'never'")
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.alarm_bytes = int(max_bytes * alarm_fraction)
        self.fsync = fsync == "always"
        self._lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.tmp"):
            stale.unlink()  # a write the last process did not finish: never handed on
        self._entries: dict[int, SpoolEntry] = {}
        for path in self.folder.glob(f"*{SUFFIX}"):
            seq = int(path.stem)
            self._entries[seq] = SpoolEntry(seq, path, path.stat().st_size)
        self.bytes_used = sum(e.size for e in self._entries.values())
        state = self._load_state()
        highest = max(self._entries, default=-1)
        self.next_seq = max(int(state.get("next_seq", 0)), highest + 1)
        self.dropped: list[list[int]] = [list(r) for r in state.get("dropped", [])]

    # -- state ---------------------------------------------------------------------------

    def _load_state(self) -> dict[str, object]:
        path = self.folder / STATE
        if not path.exists():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def _write_atomic(self, name: str, data: bytes) -> Path:
        final = self.folder / name
        tmp = self.folder / (name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if self.fsync:
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return final

    def _save_state(self) -> None:
        doc = {"next_seq": self.next_seq, "dropped": self.dropped}
        self._write_atomic(STATE, json.dumps(doc, separators=(",", ":")).encode())

    # -- the agent's side ------------------------------------------------------------------

    @property
    def alarm(self) -> bool:
        return self.bytes_used >= self.alarm_bytes

    def peek_seq(self) -> int:
        return self.next_seq

    def put(self, seq: int, frame: bytes) -> bool:
        """Spool report ``seq`` (must be :meth:`peek_seq`); False if dropped at the bound."""
        with self._lock:
            if seq != self.next_seq:
                raise ValueError(f"spool expects seq {self.next_seq}, got {seq}")
            fits = self.bytes_used + len(frame) <= self.max_bytes
            if fits:
                path = self._write_atomic(f"{seq:020d}{SUFFIX}", frame)
                self._entries[seq] = SpoolEntry(seq, path, len(frame))
                self.bytes_used += len(frame)
            elif self.dropped and self.dropped[-1][1] == seq - 1:
                self.dropped[-1][1] = seq
            else:
                self.dropped.append([seq, seq])
            self.next_seq = seq + 1
            self._save_state()
            return fits

    # -- the sender's side -----------------------------------------------------------------

    def pending(self, after_seq: int = -1, max_bytes: int = 1 << 20) -> list[SpoolEntry]:
        """Spooled reports above ``after_seq`` in seq order, up to ``max_bytes`` (≥ 1)."""
        with self._lock:
            seqs = sorted(s for s in self._entries if s > after_seq)
            out: list[SpoolEntry] = []
            total = 0
            for s in seqs:
                entry = self._entries[s]
                if out and total + entry.size > max_bytes:
                    break
                out.append(entry)
                total += entry.size
            return out

    def remove(self, seq: int) -> None:
        """Forget report ``seq``: the broker has acknowledged it."""
        with self._lock:
            entry = self._entries.pop(seq, None)
            if entry is None:
                return
            entry.path.unlink(missing_ok=True)
            self.bytes_used -= entry.size

    def __len__(self) -> int:
        return len(self._entries)

    def dropped_count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.dropped)
