"""The hot path's partition processor: same contract and output as
:class:`streams.processing.processor.PartitionProcessor`, its readable twin.

Per batch: one compiled decode of all frames, compiled checks, string interning by hash,
then one Python step per *message* (seq dedupe and event-time progress, which are
sequential by nature) and compiled per-*sample* routing, summing and ledger encoding.
Nothing is allocated per sample. Messages the kernels cannot accept go to the twin's
decode and validation for their exact rejection; a batch the fast path cannot take whole
(another released schema version, inputs beyond its integer bounds) is processed by the
twin, on the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import reasons
from core.errors import RejectedReport
from core.identity import is_known_sku, is_valid_tenant
from core.windows import split_counters
from schemas import ReportCodec, load_released_versions
from schemas import compiled_decoder as d
from streams.contract import (
    AdjustmentRow,
    BatchOutcome,
    ProcessorSettings,
    Rejection,
    SourceMessage,
)
from streams.intake.block import MessageBlock
from streams.output.native import (
    LEDGER_COLUMNS,
    LEDGER_HOLDING_COLUMNS,
    LEDGER_REPORT_COLUMNS,
    LEDGER_SAMPLE_COLUMNS,
    LEDGER_TYPES,
    column_header,
)
from streams.processing.aggregate import SUMMED, RollupKey, add_into
from streams.processing.grains import OnTime
from streams.processing.hotpath import checks, ledger, strings, windows
from streams.processing.nodeprogress import progress_rows
from streams.processing.outcome import (
    count_outcome,
    finish_rollups,
    forget_metered_time,
    observe_seq,
    reject,
)
from streams.processing.processor import PartitionProcessor
from streams.processing.seqtrack import SeqVerdict
from streams.processing.state import PartitionState
from streams.processing.validate import validate_report

_V1 = next(v for v in load_released_versions() if v.version == 1)
_FINGERPRINT = np.frombuffer(_V1.fingerprint, np.uint8)
# Where each ledger column comes from (see ledger.ledger_native).
_LEDGER_SOURCES = {
    "node_id": (ledger.MSG_STRING, 0),
    "boot_id": (ledger.MSG_STRING, 1),
    "seq": (ledger.MSG_LONG, 0),
    "cluster": (ledger.MSG_STRING, 2),
    "interval_start_us": (ledger.MSG_LONG, 1),
    "interval_end_us": (ledger.MSG_LONG, 2),
    "source_partition": (ledger.PARTITION, 0),
    "source_offset": (ledger.OFFSET, 0),
    "gpu_uuid": (ledger.SAMPLE_STRING, d.S_GPU),
    "gpu_index": (ledger.SAMPLE_VALUE, d.V_GPU_INDEX),
    "sku": (ledger.SAMPLE_STRING, d.S_SKU),
    "tenant_id": (ledger.SAMPLE_STRING, d.S_TENANT),
    "job_id": (ledger.SAMPLE_STRING, d.S_JOB),
    "tick_start_us": (ledger.SAMPLE_VALUE, d.V_TICK_START),
    "tick_end_us": (ledger.SAMPLE_VALUE, d.V_TICK_END),
    "allocated_us": (ledger.SAMPLE_VALUE, d.V_ALLOC),
    "busy_us": (ledger.SAMPLE_VALUE, d.V_BUSY),
    "unhealthy_us": (ledger.SAMPLE_VALUE, d.V_UNHEALTHY),
    "energy_mj": (ledger.SAMPLE_VALUE, d.V_ENERGY),
    "memory_peak_bytes": (ledger.SAMPLE_VALUE, d.V_MEMORY),
    "late": (ledger.LATE, 0),
}
_WIDTH = {"String": 0, "UInt64": 8, "UInt32": 4, "UInt8": 1}
_LEDGER_SPEC = np.array(
    [
        (*_LEDGER_SOURCES[c], _WIDTH[t], ledger.PER_ROW)
        for c, t in (*LEDGER_REPORT_COLUMNS, *LEDGER_HOLDING_COLUMNS)
    ]
    + [(*_LEDGER_SOURCES[c], _WIDTH[t], ledger.PER_SAMPLE) for c, t in LEDGER_SAMPLE_COLUMNS],
    np.int64,
)
_headers = [column_header(c, t) for c, t in zip(LEDGER_COLUMNS, LEDGER_TYPES, strict=True)]
_LEDGER_HEADER = np.frombuffer(b"".join(_headers), np.uint8)
_LEDGER_HEADER_OFF = np.cumsum([0] + [len(h) for h in _headers], dtype=np.int64)
# Batch sums stay in int64 when (largest value) x (samples) stays below this.
_SAFE_PRODUCT = 2**62


@dataclass
class Decoded:
    """Columns of one decoded batch (see schemas.compiled_decoder)."""

    buf: np.ndarray
    m_start: np.ndarray  # where each message's frame starts in buf
    status: np.ndarray
    m_str_off: np.ndarray
    m_str_len: np.ndarray
    m_long: np.ndarray
    m_first: np.ndarray
    m_count: np.ndarray
    s_msg: np.ndarray
    s_str_off: np.ndarray
    s_str_len: np.ndarray
    s_val: np.ndarray
    s_gpu_hash: np.ndarray  # filled by checks.check_v1

    def text(self, offset: int, length: int) -> str:
        return self.buf[offset : offset + length].tobytes().decode("utf-8")


class Workspace:
    """Per-sample decode columns kept from one batch to the next.

    Fresh arrays of this size come from ``mmap`` and are paid for again in page faults on
    first touch (measured: two thirds of the decode time of a 96k-sample batch). Columns
    grow to the largest batch seen and never shrink: bounded by the batch size, not by the
    samples metered. Views into them are valid until the next :func:`decode_batch`.
    """

    def __init__(self) -> None:
        self.capacity = 0
        self._grow(1)

    def _grow(self, capacity: int) -> None:
        self.capacity = capacity
        self.s_msg = np.empty(capacity, np.int64)
        self.s_str_off = np.empty((capacity, 4), np.int64)
        self.s_str_len = np.empty((capacity, 4), np.int64)
        self.s_val = np.empty((capacity, 8), np.int64)
        self.s_gpu_hash = np.empty(capacity, np.uint64)

    def reserve(self, samples: int) -> None:
        if samples > self.capacity:
            self._grow(max(samples, self.capacity + self.capacity // 2))


def decode_batch(values: list[bytes], samples_hint: int, workspace: Workspace) -> Decoded:
    n = len(values)
    lengths = np.fromiter(map(len, values), np.int64, n)
    offsets = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    buf = np.frombuffer(b"".join(values), np.uint8)
    return decode_frames(buf, offsets, lengths, samples_hint, workspace)


def decode_frames(
    buf: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    samples_hint: int,
    workspace: Workspace,
) -> Decoded:
    """Decodes the frames at ``buf[offsets[i] : offsets[i] + lengths[i]]``."""
    n = len(offsets)
    ws = workspace
    ws.reserve(samples_hint)
    while True:
        status = np.zeros(n, np.int8)
        m_str_off = np.zeros((n, 3), np.int64)
        m_str_len = np.zeros((n, 3), np.int64)
        m_long = np.zeros((n, 3), np.int64)
        m_first = np.zeros(n, np.int64)
        m_count = np.zeros(n, np.int64)
        total = d.decode_v1(
            buf,
            offsets,
            lengths,
            _FINGERPRINT,
            ws.capacity,
            status,
            m_str_off,
            m_str_len,
            m_long,
            m_first,
            m_count,
            ws.s_msg,
            ws.s_str_off,
            ws.s_str_len,
            ws.s_val,
        )
        if total <= ws.capacity:
            return Decoded(
                buf,
                offsets,
                status,
                m_str_off,
                m_str_len,
                m_long,
                m_first,
                m_count,
                ws.s_msg[:total],
                ws.s_str_off[:total],
                ws.s_str_len[:total],
                ws.s_val[:total],
                ws.s_gpu_hash[:total],
            )
        ws.reserve(total)  # the hint was short: decode again with room for every sample


class _Interned:
    """Distinct strings of one column, with each row's id among them (-1: not kept)."""

    def __init__(
        self,
        dec: Decoded,
        off: np.ndarray,
        length: np.ndarray,
        hashes: np.ndarray | None = None,
        keep: np.ndarray | None = None,
    ) -> None:
        if hashes is None or keep is None:
            self.inverse, first = strings.intern_strings(dec.buf, off, length)
        else:
            self.inverse, first = strings.intern_hashed(dec.buf, off, length, hashes, keep)
        rep_off, rep_len = off[first], length[first]
        self.values: list[str | None] = []
        if keep is not None:
            # Names the kernels checked: ASCII, so one decode of them all, cut by offsets
            # (a decode per string cost more than the kernels' whole overlap check).
            ends = np.cumsum(rep_len)
            text = dec.buf[strings.gather_bytes(rep_off, rep_len, ends)].tobytes().decode("ascii")
            starts = (ends - rep_len).tolist()
            self.values = [text[a:b] for a, b in zip(starts, ends.tolist(), strict=True)]
            return
        for o, n in zip(rep_off.tolist(), rep_len.tolist(), strict=True):
            try:
                self.values.append(dec.text(o, n))
            except UnicodeDecodeError:
                self.values.append(None)


@dataclass
class _Prepared:
    """A batch decoded and checked, before anything touched the partition's state."""

    msgs: MessageBlock
    dec: Decoded
    tenants: _Interned
    skus: _Interned
    clusters: _Interned
    gpus: _Interned  # of the samples of messages the kernels accepted
    # Messages the kernels did not accept, with the twin's verdict and decoded report.
    twin_verdicts: dict[int, tuple[RejectedReport, dict[str, Any] | None]]


class _TwinTakesBatch(Exception):  # noqa: N818 - internal signal, never escapes
    pass


class FastPartitionProcessor:
    def __init__(
        self,
        state: PartitionState,
        settings: ProcessorSettings,
        codec: ReportCodec | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        self.codec = codec or ReportCodec()
        self.twin = PartitionProcessor(state, settings, self.codec)
        self._samples_per_message = 64
        self._workspace = Workspace()
        # Batches the kernels handed whole to the twin, and messages whose overlap check
        # the kernels left to Python: tests require few of either where input is valid.
        self.batches_to_twin = 0
        self.time_checks_in_python = 0

    def process(self, messages: MessageBlock | Iterable[SourceMessage]) -> BatchOutcome:
        block = (
            messages
            if isinstance(messages, MessageBlock)
            else MessageBlock.of(self.state.topic, self.state.partition, list(messages))
        )
        fresh = block.after(self.state.applied_offset)
        if not len(fresh):
            outcome = BatchOutcome(self.state.topic, self.state.partition)
            outcome.applied_offset = self.state.applied_offset
            outcome.skipped_replays = len(block)
            return outcome
        try:
            prepared = self._prepare(fresh)
        except _TwinTakesBatch:
            self.batches_to_twin += 1
            return self.twin.process(block)
        outcome = self._apply(prepared)
        outcome.skipped_replays = len(block) - len(fresh)
        return outcome

    def _prepare(self, msgs: MessageBlock) -> _Prepared:
        """Everything that does not touch the state; raises _TwinTakesBatch to hand over."""
        limits = self.settings.limits
        dec = decode_frames(
            msgs.buf,
            msgs.value_at,
            np.maximum(msgs.value_len, 0),
            len(msgs) * self._samples_per_message,
            self._workspace,
        )
        self._samples_per_message = max(16, 1 + len(dec.s_msg) // len(msgs))
        timestamps = msgs.timestamp_us
        largest = checks.check_v1(
            dec.buf,
            timestamps,
            dec.status,
            dec.m_str_off,
            dec.m_str_len,
            dec.m_long,
            dec.m_first,
            dec.m_count,
            dec.s_str_off,
            dec.s_str_len,
            dec.s_val,
            dec.s_gpu_hash,
            limits.max_samples,
            limits.max_interval_us,
            limits.max_future_us,
            limits.max_power_mw,
            limits.max_memory_bytes,
        )
        tenants = _Interned(dec, dec.s_str_off[:, 2], dec.s_str_len[:, 2])
        skus = _Interned(dec, dec.s_str_off[:, 1], dec.s_str_len[:, 1])
        clusters = _Interned(dec, dec.m_str_off[:, 2], dec.m_str_len[:, 2])
        tenant_ok = np.array(
            [t is not None and is_valid_tenant(t, limits) for t in tenants.values], np.bool_
        )
        sku_ok = np.array(
            [s is not None and is_known_sku(s, limits) for s in skus.values], np.bool_
        )
        bad = ~(tenant_ok[tenants.inverse] & sku_ok[skus.inverse])
        checks.invalidate_samples(dec.status, dec.s_msg, bad)
        # Bounded by the messages valid before the tenant and SKU checks: conservative.
        if int(largest) * len(dec.s_val) >= _SAFE_PRODUCT:
            raise _TwinTakesBatch
        twin_verdicts: dict[int, tuple[RejectedReport, dict[str, Any] | None]] = {}
        for i in np.flatnonzero(dec.status != d.OK).tolist():
            report = None
            try:
                report = self.codec.decode(msgs[i].value)
                validate_report(report, limits, msgs[i].timestamp_us)
            except RejectedReport as rejected:
                twin_verdicts[i] = (rejected, report)
            else:
                raise _TwinTakesBatch  # valid, but not for the kernels (another version)
        kept = (dec.status == d.OK)[dec.s_msg]
        gpus = _Interned(dec, dec.s_str_off[:, 0], dec.s_str_len[:, 0], dec.s_gpu_hash, kept)
        return _Prepared(msgs, dec, tenants, skus, clusters, gpus, twin_verdicts)

    def _apply(self, batch: _Prepared) -> BatchOutcome:
        state = self.state
        msgs, dec = batch.msgs, batch.dec
        outcome = BatchOutcome(state.topic, state.partition)
        n = len(msgs)
        candidate = np.zeros(n, np.bool_)
        ok = (dec.status == d.OK).tolist()
        node_ids = _Interned(dec, dec.m_str_off[:, 0], dec.m_str_len[:, 0])
        boot_ids = _Interned(dec, dec.m_str_off[:, 1], dec.m_str_len[:, 1])
        node_of, boot_of = node_ids.inverse.tolist(), boot_ids.inverse.tolist()
        seqs = dec.m_long[:, 0].tolist()
        trackers = state.nodes
        rejections: list[tuple[int, Rejection]] = []
        for i in range(n):
            if ok[i]:
                node, boot = node_ids.values[node_of[i]], boot_ids.values[boot_of[i]]
                tracker = trackers.get((node, boot))  # type: ignore[arg-type]
                if (
                    tracker is not None
                    and tracker.next_seq == seqs[i]
                    and tracker.defers_to is None
                ):
                    tracker.next_seq += 1  # the next report in order: what observe_seq does
                else:
                    verdict = observe_seq(state, node, boot, seqs[i], msgs[i], outcome)  # type: ignore[arg-type]
                    if verdict is SeqVerdict.DUPLICATE:
                        outcome.duplicate_reports += 1
                        continue
                candidate[i] = True
            else:
                rejected, report = batch.twin_verdicts[i]
                refused = reject(state, msgs[i], rejected, report, outcome)
                if refused is not None:
                    rejections.append((i, refused))
        accepted, closed_before_at = self._meter_time(
            batch, candidate, node_ids, boot_ids, rejections
        )
        outcome.rejections = [r for _, r in sorted(rejections, key=lambda pair: pair[0])]
        self._meter(batch, accepted, closed_before_at, outcome)
        state.applied_offset = int(msgs.offset[-1])
        outcome.applied_offset = state.applied_offset
        forget_metered_time(state, self.settings)
        count_outcome(state, outcome)
        outcome.node_rows = progress_rows(state, int(msgs.timestamp_us.max()))
        return outcome

    def _meter_time(
        self,
        batch: _Prepared,
        candidate: np.ndarray,
        node_ids: _Interned,
        boot_ids: _Interned,
        rejections: list[tuple[int, Rejection]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Which candidates overlap no metered time, and the closed-window edge each saw;
        event time and each GPU's metered time move on as in the twin. The kernel takes
        the messages that cannot overlap anything; the rest are judged here, exactly."""
        state, settings = self.state, self.settings
        msgs, dec, gpus = batch.msgs, batch.dec, batch.gpus
        n = len(msgs)
        time = state.gpu_time
        ranges = time.ranges
        last_end = np.array(
            [found[-1] if (found := ranges.get(g)) else _INT64_MIN for g in gpus.values],  # type: ignore[arg-type]
            np.int64,
        )
        event = np.array([state.max_event_us, state.closed_before_us], np.int64)
        accepted = np.zeros(n, np.bool_)
        closed_before_at = np.zeros(n, np.int64)
        runs = np.empty((len(dec.s_val) + len(gpus.values), 3), np.int64)
        memory_us, lateness_us = settings.time_memory_us, settings.lateness_us
        begin = 0
        while begin < n:
            stop, n_runs = windows.meter_time(
                begin,
                candidate,
                dec.m_first,
                dec.m_count,
                dec.m_long[:, 2],
                dec.s_val,
                gpus.inverse,
                last_end,
                event,
                memory_us,
                lateness_us,
                settings.window_us,
                accepted,
                closed_before_at,
                runs,
            )
            for g, start, end in runs[:n_runs].tolist():
                found = ranges.get(gpus.values[g])  # type: ignore[arg-type]
                if found and found[-1] == start:
                    found[-1] = end  # time goes on: GpuTime.add's common case, inline
                else:
                    time.add(gpus.values[g], start, end)  # type: ignore[arg-type]
            state.max_event_us, state.closed_before_us = int(event[0]), int(event[1])
            if stop >= n:
                break
            self.time_checks_in_python += 1
            first, count = int(dec.m_first[stop]), int(dec.m_count[stop])
            ids = gpus.inverse[first : first + count].tolist()
            ticks = dec.s_val[first : first + count, d.V_TICK_START : d.V_TICK_END + 1].tolist()
            samples = [
                {"gpu_uuid": gpus.values[g], "tick_start_us": t0, "tick_end_us": t1}
                for g, (t0, t1) in zip(ids, ticks, strict=True)
            ]
            horizon_us = state.max_event_us - memory_us
            overlap = time.overlap(samples, horizon_us)
            if overlap is None:
                time.record(samples, horizon_us)
                accepted[stop] = True
                closed_before_at[stop] = state.closed_before_us
                state.advance_event_time(int(dec.m_long[stop, 2]), lateness_us, settings.window_us)
            else:
                rejected = Rejection(
                    msgs[stop],
                    reasons.OVERLAPPING_TIME,
                    overlap.detail(),
                    node_id=node_ids.values[node_ids.inverse[stop]],  # type: ignore[arg-type]
                    boot_id=boot_ids.values[boot_ids.inverse[stop]],  # type: ignore[arg-type]
                    seq=int(dec.m_long[stop, 0]),
                )
                rejections.append((stop, rejected))
            for g in set(ids):
                last_end[g] = _end_or_min(time.last_end(gpus.values[g]))  # type: ignore[arg-type]
            event[:] = (state.max_event_us, state.closed_before_us)
            begin = stop + 1
        return accepted, closed_before_at

    def _meter(
        self,
        batch: _Prepared,
        accepted: np.ndarray,
        closed_before_at: np.ndarray,
        outcome: BatchOutcome,
    ) -> None:
        state, width = self.state, self.settings.window_us
        msgs, dec = batch.msgs, batch.dec
        tenants, skus, clusters = batch.tenants, batch.skus, batch.clusters
        outcome.accepted_reports = int(accepted.sum())
        window, straddle, late = windows.route(
            dec.s_msg, dec.s_val, accepted, closed_before_at, width
        )
        in_batch = window >= 0  # the samples metered: zero-length ticks are not
        outcome.accepted_samples = int(in_batch.sum())
        sample_cluster = clusters.inverse[dec.s_msg]

        def key_of(t: int, s: int, c: int, w: int) -> RollupKey:
            return RollupKey(tenants.values[t], skus.values[s], clusters.values[c], w)  # type: ignore[arg-type]

        on_time = OnTime(state.windows, state.coarse)
        late_by_msg: dict[int, dict[RollupKey, list[int]]] = {}

        # Samples inside one window: grouped and summed in compiled code.
        simple = in_batch & ~straddle
        for selected, is_late in ((simple & ~late, False), (simple & late, True)):
            if not selected.any():
                continue
            idx = np.flatnonzero(selected)
            # One int64 per (tenant, sku, cluster, window[, message]): mixed radix.
            w0 = int(window[idx].min())
            radix = [
                len(tenants.values),
                len(skus.values),
                len(clusters.values),
                int(window[idx].max() - w0) // width + 1,
                len(msgs),
            ]
            if np.prod(np.array(radix, dtype=object)) >= 2**62:  # pragma: no cover
                raise AssertionError("group key does not fit in int64")
            key = tenants.inverse[idx] * radix[1] + skus.inverse[idx]
            key = (key * radix[2] + sample_cluster[idx]) * radix[3] + (window[idx] - w0) // width
            if is_late:
                key = key * radix[4] + dec.s_msg[idx]
            group_of, first = windows.group_ids(key)
            group = np.full(len(window), -1, np.int64)
            group[idx] = group_of
            sums, overflow = windows.sum_groups(group, len(first), dec.s_val, selected)
            if overflow:
                raise AssertionError("int64 overflow despite the input bound")  # pragma: no cover
            rep = idx[first]
            for t, s, c, w, m, parts in zip(
                tenants.inverse[rep].tolist(),
                skus.inverse[rep].tolist(),
                sample_cluster[rep].tolist(),
                window[rep].tolist(),
                dec.s_msg[rep].tolist(),
                sums.tolist(),
                strict=True,
            ):
                key = key_of(t, s, c, w)
                if is_late:
                    add_into(late_by_msg.setdefault(m, {}), key, parts)
                else:
                    on_time.add(key, parts)

        # Samples straddling windows (rare: agents align ticks): split in Python integers.
        for s in np.flatnonzero(straddle).tolist():
            m = int(dec.s_msg[s])
            values = dec.s_val[s]
            key_base = (int(tenants.inverse[s]), int(skus.inverse[s]), int(sample_cluster[s]))
            t0, t1 = int(values[d.V_TICK_START]), int(values[d.V_TICK_END])
            counters = [int(values[d.V_ALLOC + c]) for c in range(len(SUMMED))]
            is_late = False
            for n, (w, parts) in enumerate(split_counters(counters, t0, t1, width)):
                key = key_of(*key_base, w)
                row = [*parts, 1 if n == 0 else 0]
                if w < closed_before_at[m]:
                    is_late = True
                    add_into(late_by_msg.setdefault(m, {}), key, row)
                else:
                    on_time.add(key, row)
            late[s] = is_late

        if self.settings.emit_ledger:
            offsets = msgs.offset
            block, rows, samples = ledger.ledger_native(
                dec.buf,
                dec.s_msg,
                dec.s_str_off,
                dec.s_str_len,
                dec.s_val,
                tenants.inverse,
                skus.inverse,
                dec.m_str_off,
                dec.m_str_len,
                dec.m_long,
                offsets,
                in_batch,
                late,
                state.partition,
                _LEDGER_SPEC,
                _LEDGER_HEADER,
                _LEDGER_HEADER_OFF,
            )
            outcome.ledger = memoryview(block)  # the sink joins the partitions' blocks
            outcome.ledger_rows = int(rows)
            outcome.ledger_samples = int(samples)
        for m in sorted(late_by_msg):
            outcome.late_reports += 1
            offset = int(msgs.offset[m])
            open_after = int(closed_before_at[m]) if state.folds_late(offset) else None
            for key, sums in sorted(late_by_msg[m].items()):
                outcome.adjustments.append(AdjustmentRow(key, state.partition, offset, tuple(sums)))
                on_time.add_late(key, sums, offset, open_after)
        state.evict_closed()
        finish_rollups(outcome, state.partition, on_time, int(msgs.offset[-1]))


_INT64_MIN = -(2**63)


def _end_or_min(end_us: int | None) -> int:
    return _INT64_MIN if end_us is None else end_us
