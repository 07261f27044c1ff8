"""The ledger's Native block written in compiled code, byte for byte what
``streams/output/native.py`` encodes (the parity test compares the bytes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from schemas.compiled_decoder import (
    S_GPU,
    S_JOB,
    V_GPU_INDEX,
    V_TICK_END,
    V_TICK_START,
)
from streams.processing.hotpath.strings import FNV_PRIME, hash_bytes, same_bytes


@njit(cache=True, inline="always")
def _uleb_size(n):
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


@njit(cache=True, inline="always")
def _put_uleb(out, pos, n):
    while n >= 0x80:
        out[pos] = (n & 0x7F) | 0x80
        n >>= 7
        pos += 1
    out[pos] = n
    return pos + 1


# Where each ledger column's values come from (spec rows of ledger_native).
MSG_STRING, SAMPLE_STRING, MSG_LONG, SAMPLE_VALUE, PARTITION, OFFSET, LATE = range(7)


# What a column has one value of: a row (a report's GPU holding), or a sample (an array).
PER_ROW, PER_SAMPLE = range(2)


@njit(cache=True, inline="always")
def _put_bytes(out, pos, buf, o, n):
    if n > 24:  # a slice's memmove pays off only past a few words
        out[pos : pos + n] = buf[o : o + n]
    else:
        for b in range(n):
            out[pos + b] = buf[o + b]
    return pos + n


@njit(cache=True, inline="always")
def _holding_hash(buf, s_str_off, s_str_len, s_val, s_tenant, s_sku, k):
    h = np.uint64(s_val[k, V_GPU_INDEX]) ^ (np.uint64(s_tenant[k]) << np.uint64(32))
    h = (h ^ np.uint64(s_sku[k])) * FNV_PRIME
    for f in (S_GPU, S_JOB):
        h = (h ^ hash_bytes(buf, s_str_off[k, f], s_str_len[k, f])) * FNV_PRIME
    return h ^ (h >> np.uint64(29))


@njit(cache=True, inline="always")
def _same_holding(buf, s_str_off, s_str_len, s_val, s_tenant, s_sku, j, k):
    if (
        s_val[j, V_GPU_INDEX] != s_val[k, V_GPU_INDEX]
        or s_tenant[j] != s_tenant[k]
        or s_sku[j] != s_sku[k]
    ):
        return False
    for f in (S_GPU, S_JOB):
        n = s_str_len[k, f]
        if s_str_len[j, f] != n or not same_bytes(buf, s_str_off[j, f], s_str_off[k, f], n):
            return False
    return True


@njit(cache=True, nogil=True)
def _holdings(buf, s_str_off, s_str_len, s_val, s_tenant, s_sku, picked, ends):
    """Per report, its samples' distinct holdings in order of first appearance. Returns (a
    sample standing for each holding, the count up to each report's end, each sample's
    1-based position among its report's holdings). ``s_tenant`` and ``s_sku`` are the
    samples' interned ids (equal ids, equal strings).

    A sample's holding is first guessed to be that of the sample one tick before it
    (agents list a tick's GPUs in the same order every tick): one comparison instead of
    hashing strings and probing, which took most of this kernel's time; a wrong guess only
    costs that comparison.
    """
    samples = picked.shape[0]
    rep = np.empty(samples, np.int64)
    rep_hash = np.empty(samples, np.uint64)
    rep_ends = np.empty(ends.shape[0], np.int64)
    at = np.empty(samples, np.int64)
    widest = 0
    begin = 0
    for r in range(ends.shape[0]):
        widest = max(widest, ends[r] - begin)
        begin = ends[r]
    size = 16
    while size < 2 * widest:
        size *= 2
    table = np.empty(size, np.int64)  # distinct value of each slot, -1 for none
    count = 0
    begin = 0
    for r in range(ends.shape[0]):
        base = count
        mask = 16 - 1
        while mask + 1 < 2 * (ends[r] - begin):
            mask = 2 * mask + 1
        table[: mask + 1] = -1
        # Samples per tick, if the report's first tick is listed first.
        period = ends[r] - begin
        k0 = picked[begin]
        for i in range(begin + 1, ends[r]):
            k = picked[i]
            if (
                s_val[k, V_TICK_START] != s_val[k0, V_TICK_START]
                or s_val[k, V_TICK_END] != s_val[k0, V_TICK_END]
            ):
                period = i - begin
                break
        for i in range(begin, ends[r]):
            k = picked[i]
            if i - period >= begin:
                guess = at[i - period]
                j = rep[base + guess - 1]
                if _same_holding(buf, s_str_off, s_str_len, s_val, s_tenant, s_sku, j, k):
                    at[i] = guess
                    continue
            h = _holding_hash(buf, s_str_off, s_str_len, s_val, s_tenant, s_sku, k)
            slot = np.int64(h >> np.uint64(40)) & mask
            while True:
                g = table[slot]
                if g < 0:
                    table[slot] = count
                    rep[count] = k
                    rep_hash[count] = h
                    at[i] = count - base + 1
                    count += 1
                    break
                j = rep[g]
                if rep_hash[g] == h and _same_holding(
                    buf, s_str_off, s_str_len, s_val, s_tenant, s_sku, j, k
                ):
                    at[i] = g - base + 1
                    break
                slot = (slot + 1) & mask
        rep_ends[r] = count
        begin = ends[r]
    return rep[:count], rep_ends, at


@njit(cache=True, nogil=True)
def ledger_native(
    buf,
    s_msg,
    s_str_off,
    s_str_len,
    s_val,
    s_tenant,
    s_sku,
    m_str_off,
    m_str_len,
    m_long,
    m_offset,
    selected,
    late,
    partition,
    spec,
    header,
    header_off,
):
    """One Native block (streams/output/native.py) of the selected samples: a row per report and
    distinct GPU holding, reports in order, a report's holdings in order of first
    appearance. Per-row columns hold one value per row (from the holding's first sample
    and its report); array columns hold, per row, one element per sample of the holding,
    in report order.

    ``s_tenant`` and ``s_sku`` are the samples' interned tenant and SKU ids.
    ``spec[c]`` = (source, field, byte width, what it has one value of) of column c;
    ``header[header_off[c]:header_off[c + 1]]`` its name and type, already encoded.
    Returns (block, rows, samples); nothing selected gives an empty block.

    Integers are gathered into a typed column and copied in one move: choosing the source
    and writing byte by byte per value took twice as long.
    """
    picked = np.empty(s_msg.shape[0], np.int64)  # the selected samples
    ends = np.empty(s_msg.shape[0], np.int64)  # samples up to each report's end
    reports = 0
    samples = 0
    for k in range(s_msg.shape[0]):
        if selected[k]:
            if samples > 0 and s_msg[k] != s_msg[picked[samples - 1]]:
                ends[reports] = samples
                reports += 1
            picked[samples] = k
            samples += 1
    if samples == 0:
        return np.empty(0, np.uint8), 0, 0
    ends[reports] = samples
    reports += 1
    picked, ends = picked[:samples], ends[:reports]
    first, report_rows, gpu_at = _holdings(
        buf, s_str_off, s_str_len, s_val, s_tenant, s_sku, picked, ends
    )
    rows = first.shape[0]
    # Each row's samples, gathered in report order: a counting sort by row.
    row_ends = np.zeros(rows, np.int64)
    row_of = np.empty(samples, np.int64)
    begin = 0
    for r in range(reports):
        base = report_rows[r - 1] if r > 0 else 0
        for i in range(begin, ends[r]):
            row_of[i] = base + gpu_at[i] - 1
            row_ends[row_of[i]] += 1
        begin = ends[r]
    fill = np.empty(rows, np.int64)
    total = 0
    for r in range(rows):
        fill[r] = total
        total += row_ends[r]
        row_ends[r] = total
    order = np.empty(samples, np.int64)
    for i in range(samples):
        order[fill[row_of[i]]] = picked[i]
        fill[row_of[i]] += 1
    columns = spec.shape[0]
    size = _uleb_size(columns) + _uleb_size(rows) + header_off[columns]
    for c in range(columns):
        kind, f, width, per = spec[c, 0], spec[c, 1], spec[c, 2], spec[c, 3]
        which = first if per == PER_ROW else order
        if per == PER_SAMPLE:
            size += 8 * rows
        if kind == MSG_STRING:
            for k in which:
                n = m_str_len[s_msg[k], f]
                size += _uleb_size(n) + n
        elif kind == SAMPLE_STRING:
            for k in which:
                n = s_str_len[k, f]
                size += _uleb_size(n) + n
        else:
            size += width * which.shape[0]
    out = np.empty(size, np.uint8)
    pos = _put_uleb(out, 0, columns)
    pos = _put_uleb(out, pos, rows)
    for c in range(columns):
        for b in range(header_off[c], header_off[c + 1]):
            out[pos] = header[b]
            pos += 1
        kind, f, width, per = spec[c, 0], spec[c, 1], spec[c, 2], spec[c, 3]
        which = first
        if per == PER_SAMPLE:
            which = order
            out[pos : pos + 8 * rows] = row_ends.view(np.uint8)
            pos += 8 * rows
        if kind == SAMPLE_STRING:
            for k in which:
                n = s_str_len[k, f]
                pos = _put_uleb(out, pos, n)
                pos = _put_bytes(out, pos, buf, s_str_off[k, f], n)
            continue
        if kind == MSG_STRING:
            for k in which:
                m = s_msg[k]
                n = m_str_len[m, f]
                pos = _put_uleb(out, pos, n)
                pos = _put_bytes(out, pos, buf, m_str_off[m, f], n)
            continue
        count = which.shape[0]
        wide = np.empty(count, np.int64)
        for i in range(count):
            k = which[i]
            if kind == SAMPLE_VALUE:
                wide[i] = s_val[k, f]
            elif kind == MSG_LONG:
                wide[i] = m_long[s_msg[k], f]
            elif kind == OFFSET:
                wide[i] = m_offset[s_msg[k]]
            elif kind == PARTITION:
                wide[i] = partition
            else:
                wide[i] = 1 if late[k] else 0
        if width == 8:
            out[pos : pos + 8 * count] = wide.view(np.uint8)
        elif width == 4:
            out[pos : pos + 4 * count] = wide.astype(np.uint32).view(np.uint8)
        else:
            out[pos : pos + count] = wide.astype(np.uint8)
        pos += width * count
    return out, rows, samples
