"""Compiled validation of decoded reports, mirroring ``streams/processing/validate.py``: a
check that fails only marks the message INVALID, and the exact reason always comes from the
readable path. A GPU's ticks that overlap each other are found here too.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from schemas.compiled_decoder import (
    INVALID,
    OK,
    S_GPU,
    S_JOB,
    V_ALLOC,
    V_BUSY,
    V_ENERGY,
    V_GPU_INDEX,
    V_MEMORY,
    V_TICK_END,
    V_TICK_START,
    V_UNHEALTHY,
)
from streams.processing.hotpath.strings import is_name, is_utf8, name_hash, same_bytes


@njit(cache=True, inline="always")
def _same_gpu(buf, s_str_off, s_str_len, gpu_hash, first, j, k):
    return (
        gpu_hash[j - first] == gpu_hash[k - first]
        and s_str_len[j, S_GPU] == s_str_len[k, S_GPU]
        and same_bytes(buf, s_str_off[j, S_GPU], s_str_off[k, S_GPU], s_str_len[k, S_GPU])
    )


@njit(cache=True, nogil=True)
def _has_overlap(buf, s_str_off, s_str_len, s_val, gpu_hash, first, count, table):
    """True if two ticks of one GPU in one report share time (identical ticks included);
    zero-length ticks hold none. ``gpu_hash`` holds each sample's gpu_uuid hash, by
    position in the report.

    O(count) by hashing while each GPU's ticks come in time order, as agents list them:
    a tick need only start at or after the GPU's tick before it. Otherwise the report's
    ticks are sorted by GPU and start, and neighbours compared.

    The in-order pass tells GPUs apart by hash alone (comparing the uuid bytes of every
    sample cost more than the rest of the check): two GPUs of one hash are then checked
    as one timeline, which can only find more overlaps, never fewer, and a report so
    flagged is judged by the readable path.
    """
    mask = table.shape[0] - 1  # a power of two, at least twice the largest report
    table[:] = -1
    for k in range(first, first + count):
        t0 = s_val[k, V_TICK_START]
        if s_val[k, V_TICK_END] == t0:
            continue
        slot = np.int64(gpu_hash[k - first] >> np.uint64(1)) & mask
        while True:
            j = table[slot]
            if j < 0:
                table[slot] = k
                break
            if gpu_hash[j - first] == gpu_hash[k - first]:
                if t0 >= s_val[j, V_TICK_END]:
                    table[slot] = k  # in time order: now the GPU's latest tick
                    break
                if t0 >= s_val[j, V_TICK_START]:
                    return True
                return _has_overlap_sorted(buf, s_str_off, s_str_len, s_val, gpu_hash, first, count)
            slot = (slot + 1) & mask
    return False


@njit(cache=True, nogil=True)
def _has_overlap_sorted(buf, s_str_off, s_str_len, s_val, gpu_hash, first, count):
    by_start = np.argsort(s_val[first : first + count, V_TICK_START], kind="mergesort")
    order = by_start[np.argsort(gpu_hash[:count][by_start], kind="mergesort")] + first
    previous = -1
    for k in order:
        if s_val[k, V_TICK_END] == s_val[k, V_TICK_START]:
            continue
        if previous >= 0 and gpu_hash[previous - first] == gpu_hash[k - first]:
            if not _same_gpu(buf, s_str_off, s_str_len, gpu_hash, first, previous, k):
                return True  # two GPUs with one hash: the readable path judges
            if s_val[k, V_TICK_START] < s_val[previous, V_TICK_END]:
                return True
        previous = k
    return False


@njit(cache=True, nogil=True)
def check_v1(
    buf,
    timestamp_us,
    m_status,
    m_str_off,
    m_str_len,
    m_long,
    m_first,
    m_count,
    s_str_off,
    s_str_len,
    s_val,
    s_gpu_hash,
    max_samples,
    max_interval_us,
    max_future_us,
    max_power_mw,
    max_memory_bytes,
):
    """Mark INVALID every decoded message that breaks a rule of validate_report, apart
    from the tenant and SKU checks (done per distinct string, see :func:`intern_strings`).

    Fills ``s_gpu_hash`` with each sample's gpu_uuid hash (for :func:`intern_hashed`),
    for the messages it leaves valid. Returns the largest summed counter (allocated, busy,
    unhealthy, energy) over the samples of those messages.
    """
    size = 16
    while m_status.shape[0] and size < 2 * m_count.max():
        size *= 2
    table = np.full(size, -1, np.int64)  # one scratch table for every report
    largest = 0  # the largest summed counter of a valid report: bounds the batch sums
    for m in range(m_status.shape[0]):
        if m_status[m] != OK:
            continue
        ok = True
        for f in range(3):
            if not is_name(buf, m_str_off[m, f], m_str_len[m, f]):
                ok = False
        seq, start, end = m_long[m, 0], m_long[m, 1], m_long[m, 2]
        if seq < 0 or start < 0 or end <= start or end - start > max_interval_us:
            ok = False
        if end > timestamp_us[m] + max_future_us or m_count[m] > max_samples:
            ok = False
        first, count = m_first[m], m_count[m]
        gpu_hash = s_gpu_hash[first : first + count]
        for k in range(first, first + count):
            if not ok:
                break
            v = s_val[k]
            h, name_ok = name_hash(buf, s_str_off[k, S_GPU], s_str_len[k, S_GPU])
            gpu_hash[k - first] = h
            if not name_ok or v[V_GPU_INDEX] < 0:
                ok = False
            if s_str_len[k, S_JOB] > 256 or not is_utf8(
                buf, s_str_off[k, S_JOB], s_str_len[k, S_JOB]
            ):
                ok = False
            t0, t1 = v[V_TICK_START], v[V_TICK_END]
            if t1 < t0 or t0 < start or t1 > end:
                ok = False
                break
            if t1 == t0 and (v[V_ALLOC] | v[V_BUSY] | v[V_UNHEALTHY] | v[V_ENERGY]) != 0:
                ok = False  # a zero-length tick holds no time, so it may carry no usage
                break
            for f in range(V_ALLOC, V_MEMORY + 1):
                if v[f] < 0:
                    ok = False
            tick = t1 - t0
            if v[V_ALLOC] > tick or v[V_BUSY] > v[V_ALLOC] or v[V_UNHEALTHY] > v[V_ALLOC]:
                ok = False
            if v[V_ENERGY] > max_power_mw * tick // 1_000_000 or v[V_MEMORY] > max_memory_bytes:
                ok = False
        if ok and _has_overlap(buf, s_str_off, s_str_len, s_val, gpu_hash, first, count, table):
            ok = False
        if not ok:
            m_status[m] = INVALID
        else:
            for k in range(first, first + count):
                for f in range(V_ALLOC, V_ENERGY + 1):
                    largest = max(largest, s_val[k, f])
    return largest


@njit(cache=True, nogil=True)
def invalidate_samples(m_status, s_msg, bad):
    """Mark INVALID the message of every sample whose flag in ``bad`` is set."""
    for k in range(s_msg.shape[0]):
        if bad[k]:
            m_status[s_msg[k]] = INVALID
