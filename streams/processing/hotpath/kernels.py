"""Compiled per-sample work after decoding: checks, string hashing, routing, the ledger.

Each kernel mirrors a rule of the readable path (``streams/processing/validate.py``,
``streams/processing/processor.py``, ``streams/output/native.py``). A check that fails only
marks the message INVALID; the exact reason always comes from the readable path. Kernels release
the GIL (``nogil``): the worker processes a batch on a thread while its event loop goes on
fetching the next one.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streams.processing.hotpath.decode import (
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

INT64_MAX = np.int64(2**63 - 1)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, inline="always")
def _is_utf8(buf, off, n):
    i = off
    end = off + n
    while i < end:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            need = 2
            low = 0xA0 if c == 0xE0 else 0x80
            high = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            need = 3
            low = 0x90 if c == 0xF0 else 0x80
            high = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if i + need >= end:  # the last continuation byte would be past the string
            return False
        if not (low <= buf[i + 1] <= high):
            return False
        for j in range(2, need + 1):
            if not (0x80 <= buf[i + j] <= 0xBF):
                return False
        i += need + 1
    return True


# Per byte of a name (streams.processing.validate._NAME): 3 may start it, 1 may follow, 0 never
# (odd for every allowed byte, so that AND over a name's bytes is 0 when one is not).
_NAME_BYTE = np.zeros(256, np.uint8)
_NAME_BYTE[[ord(c) for c in "._:/-"]] = 1
_NAME_BYTE[[ord(c) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"]] = 3


@njit(cache=True, inline="always")
def _word(buf, off, n):
    """Up to 8 bytes at ``off`` as one little-endian word. Offsets and lengths here are
    never negative (the decoder returns length 0 for a bad one), so they are indexed
    unsigned: numba then skips its per-byte check for negative indexes, and the whole
    hot path runs about a fifth faster for it (measured)."""
    w = np.uint64(0)
    off = np.uint64(off)
    for j in range(np.uint64(n)):
        w |= np.uint64(buf[off + j]) << (np.uint64(8) * j)
    return w


@njit(cache=True, inline="always")
def _hash(buf, off, n):
    """A 64-bit hash of a string, mixed a word (8 bytes) at a time: a byte-wise FNV chain
    costs four cycles a byte. Equal hashes are always confirmed byte for byte."""
    h = _FNV_OFFSET ^ np.uint64(n)
    i = 0
    while i + 8 <= n:
        h = (h ^ _word(buf, off + i, 8)) * _FNV_PRIME
        h ^= h >> np.uint64(29)
        i += 8
    h = (h ^ _word(buf, off + i, n - i)) * _FNV_PRIME
    return h ^ (h >> np.uint64(29))


@njit(cache=True, inline="always")
def _same_bytes(buf, a, b, n):
    """Whether the ``n`` bytes at ``a`` and at ``b`` are equal.

    Unsigned indexes spare numba's check for negative ones, and folding the differences
    together without an early exit lets the loop run many bytes per step: three times
    faster on a GPU UUID, and equal strings (the common case) are read whole anyway.
    """
    a, b = np.uint64(a), np.uint64(b)
    diff = np.uint8(0)
    for i in range(np.uint64(n)):
        diff |= buf[a + i] ^ buf[b + i]
    return diff == 0


@njit(cache=True, inline="always")
def _name_hash(buf, off, n):
    """:func:`_hash` of a string, and whether it is a name ([A-Za-z0-9][A-Za-z0-9._:/-]{0,127},
    as streams.processing.validate._NAME)."""
    allowed = np.uint8(1)
    start = np.uint64(off)
    for i in range(np.uint64(1), np.uint64(n)):  # no branch per byte: folds the classes
        allowed &= _NAME_BYTE[buf[start + i]]
    ok = allowed != 0 and 1 <= n <= 128 and _NAME_BYTE[buf[off]] == 3
    return _hash(buf, off, n), ok


@njit(cache=True, inline="always")
def _is_name(buf, off, n):
    return _name_hash(buf, off, n)[1]


@njit(cache=True, inline="always")
def _same_gpu(buf, s_str_off, s_str_len, gpu_hash, first, j, k):
    return (
        gpu_hash[j - first] == gpu_hash[k - first]
        and s_str_len[j, S_GPU] == s_str_len[k, S_GPU]
        and _same_bytes(buf, s_str_off[j, S_GPU], s_str_off[k, S_GPU], s_str_len[k, S_GPU])
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
            if not _is_name(buf, m_str_off[m, f], m_str_len[m, f]):
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
            h, name_ok = _name_hash(buf, s_str_off[k, S_GPU], s_str_len[k, S_GPU])
            gpu_hash[k - first] = h
            if not name_ok or v[V_GPU_INDEX] < 0:
                ok = False
            if s_str_len[k, S_JOB] > 256 or not _is_utf8(
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
def intern_strings(buf, off, length):
    """Dense ids for equal strings, in order of first appearance, compared byte for byte.

    Returns (id of each string, index of each id's first string). The table holds the
    distinct strings only (a handful of tenants or SKUs per batch), so it stays in cache.
    """
    return _intern(buf, off, length, np.empty(0, np.uint64), np.empty(0, np.bool_))


@njit(cache=True, nogil=True)
def intern_hashed(buf, off, length, hashes, keep):
    """:func:`intern_strings` of the strings whose ``keep`` is set, with their hashes
    already known (``check_v1``'s GPU hashes); the others get id -1."""
    return _intern(buf, off, length, hashes, keep)


@njit(cache=True, inline="always")
def _intern(buf, off, length, hashes, keep):
    n = off.shape[0]
    ids = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    distinct_hash = np.empty(n, np.uint64)  # of each distinct string, by id
    size = 64
    slot_id = np.full(size, -1, np.int64)
    distinct = 0
    for i in range(n):
        if keep.shape[0] and not keep[i]:
            ids[i] = -1
            continue
        o, m = off[i], length[i]
        # Runs of one tenant or SKU are the common case.
        if i > 0 and ids[i - 1] >= 0 and length[i - 1] == m and _same_bytes(buf, off[i - 1], o, m):
            ids[i] = ids[i - 1]
            continue
        h = hashes[i] if hashes.shape[0] else _hash(buf, o, m)
        s = np.int64(h >> np.uint64(40)) & (size - 1)
        while True:
            g = slot_id[s]
            if g < 0:
                break
            if (
                distinct_hash[g] == h
                and length[first[g]] == m
                and _same_bytes(buf, off[first[g]], o, m)
            ):
                break
            s = (s + 1) & (size - 1)
        if g >= 0:
            ids[i] = g
            continue
        ids[i] = distinct
        first[distinct] = i
        distinct_hash[distinct] = h
        slot_id[s] = distinct
        distinct += 1
        if 2 * distinct > size:  # keep the table at most half full
            size *= 4
            slot_id = np.full(size, -1, np.int64)
            for g in range(distinct):
                s = np.int64(distinct_hash[g] >> np.uint64(40)) & (size - 1)
                while slot_id[s] >= 0:
                    s = (s + 1) & (size - 1)
                slot_id[s] = g
    return ids, first[:distinct]


@njit(cache=True, nogil=True)
def gather_bytes(off, length, ends):
    """Positions in the buffer of the strings at (``off``, ``length``), one after another
    (``ends``: their cumulative lengths), to copy them out in one move."""
    at = np.empty(ends[-1] if ends.shape[0] else 0, np.int64)
    begin = 0
    for i in range(off.shape[0]):
        for j in range(length[i]):
            at[begin + j] = off[i] + j
        begin = ends[i]
    return at


@njit(cache=True, nogil=True)
def invalidate_samples(m_status, s_msg, bad):
    """Mark INVALID the message of every sample whose flag in ``bad`` is set."""
    for k in range(s_msg.shape[0]):
        if bad[k]:
            m_status[s_msg[k]] = INVALID


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
    h = (h ^ np.uint64(s_sku[k])) * _FNV_PRIME
    for f in (S_GPU, S_JOB):
        h = (h ^ _hash(buf, s_str_off[k, f], s_str_len[k, f])) * _FNV_PRIME
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
        if s_str_len[j, f] != n or not _same_bytes(buf, s_str_off[j, f], s_str_off[k, f], n):
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
