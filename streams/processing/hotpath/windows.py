"""Compiled routing of samples to their windows, lateness, grouping and summing per key,
and each GPU's metered time, mirroring ``streams/processing/processor.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from schemas.compiled_decoder import (
    V_ALLOC,
    V_TICK_END,
    V_TICK_START,
)

INT64_MAX = np.int64(2**63 - 1)


@njit(cache=True, nogil=True)
def route(s_msg, s_val, accepted, closed_before_at, width_us):
    """Per sample of an accepted message: its window, and whether it straddles windows or
    falls in a closed one. Samples of other messages, and zero-length ticks (which meter
    nothing), get window -1."""
    n = s_msg.shape[0]
    window = np.full(n, -1, np.int64)
    straddle = np.zeros(n, np.bool_)
    late = np.zeros(n, np.bool_)
    for k in range(n):
        m = s_msg[k]
        if not accepted[m]:
            continue
        t0 = s_val[k, V_TICK_START]
        if s_val[k, V_TICK_END] == t0:
            continue
        w = t0 - t0 % width_us
        window[k] = w
        straddle[k] = s_val[k, V_TICK_END] > w + width_us
        late[k] = w < closed_before_at[m]
    return window, straddle, late


@njit(cache=True, nogil=True)
def sum_groups(group, n_groups, s_val, selected):
    """Per group: allocated, busy, unhealthy, energy sums and sample count, in int64.

    Returns (sums, overflowed). The caller has bounded the inputs so that overflow cannot
    happen; the flag is a second line of defence.
    """
    sums = np.zeros((n_groups, 5), np.int64)
    overflow = False
    for k in range(group.shape[0]):
        if not selected[k]:
            continue
        g = group[k]
        for c in range(4):
            v = s_val[k, V_ALLOC + c]
            if sums[g, c] > INT64_MAX - v:
                overflow = True
            sums[g, c] += v
        sums[g, 4] += 1
    return sums, overflow


@njit(cache=True, nogil=True)
def group_ids(keys):
    """Dense ids for equal int64 keys, in order of first appearance, by open addressing.

    Returns (group of each key, index of each group's first key).
    """
    n = keys.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    mask = size - 1
    slot_key = np.empty(size, np.int64)
    slot_group = np.full(size, -1, np.int64)
    group = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    groups = 0
    for i in range(n):
        key = keys[i]
        h = (np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
        s = np.int64(h) & mask
        while True:
            g = slot_group[s]
            if g < 0:
                slot_key[s] = key
                slot_group[s] = groups
                first[groups] = i
                group[i] = groups
                groups += 1
                break
            if slot_key[s] == key:
                group[i] = g
                break
            s = (s + 1) & mask
    return group, first[:groups]


@njit(cache=True, inline="always")
def _emit_run(runs, n_runs, g, start, end):
    runs[n_runs, 0] = g
    runs[n_runs, 1] = start
    runs[n_runs, 2] = end
    return n_runs + 1


@njit(cache=True, nogil=True)
def meter_time(
    begin,
    candidate,
    m_first,
    m_count,
    m_end,
    s_val,
    s_gpu,
    last_end,
    event,
    memory_us,
    lateness_us,
    width_us,
    accepted,
    closed_before_at,
    runs,
):
    """The overlap check and event time of streams.processing.processor, message by message from
    ``begin``, for the messages whose seq made them ``candidate``s.

    A message is accepted when each tick (after the horizon: event time less
    ``memory_us``) starts at or after the end of its GPU's metered time (``last_end``, by
    batch GPU id ``s_gpu``) and of the GPU's tick before it in the message: nothing can
    overlap then. Anything else (a late report filling a hole, a real overlap, ticks out
    of order) stops the pass at that message, for the caller to judge exactly.

    ``event`` = [max_event_us, closed_before_us], updated in place; accepted messages get
    ``accepted`` and ``closed_before_at`` set. The metered time, merged into runs per GPU,
    goes into ``runs`` rows (gpu, start, end). Returns (the message it stopped at, or the
    number of messages; the rows of ``runs`` filled).
    """
    gpus = last_end.shape[0]
    run_start = np.full(gpus, -1, np.int64)
    tick_end = np.empty(gpus, np.int64)  # the GPU's latest tick in the message in hand
    tick_of = np.full(gpus, -1, np.int64)  # which message ``tick_end`` is of
    n_runs = 0
    max_event, closed_before = event[0], event[1]
    stop = candidate.shape[0]
    for m in range(begin, candidate.shape[0]):
        if not candidate[m]:
            continue
        horizon = max_event - memory_us
        first, count = m_first[m], m_count[m]
        simple = True
        for k in range(first, first + count):
            t0, t1 = max(s_val[k, V_TICK_START], horizon), s_val[k, V_TICK_END]
            if t1 <= t0:
                continue
            g = s_gpu[k]
            if t0 < (tick_end[g] if tick_of[g] == m else last_end[g]):
                simple = False
                break
            tick_end[g] = t1
            tick_of[g] = m
        if not simple:
            stop = m
            break
        for k in range(first, first + count):
            t0, t1 = max(s_val[k, V_TICK_START], horizon), s_val[k, V_TICK_END]
            if t1 <= t0:
                continue
            g = s_gpu[k]
            if run_start[g] < 0 or t0 != last_end[g]:
                if run_start[g] >= 0:
                    n_runs = _emit_run(runs, n_runs, g, run_start[g], last_end[g])
                run_start[g] = t0
            last_end[g] = t1
        accepted[m] = True
        closed_before_at[m] = closed_before
        end = m_end[m]
        if end > max_event:  # PartitionState.advance_event_time
            max_event = end
            edge = end - lateness_us
            closed_before = max(closed_before, edge - edge % width_us)
    for g in range(gpus):
        if run_start[g] >= 0:
            n_runs = _emit_run(runs, n_runs, g, run_start[g], last_end[g])
    event[0], event[1] = max_event, closed_before
    return stop, n_runs
