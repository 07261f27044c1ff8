"""A bounds-checked Avro decoder for usage report v1, compiled with numba.

Input: many single-object frames concatenated in one ``uint8`` buffer, with per-message
offsets and lengths. Output: columns. Strings stay where they are, as (offset, length)
into the buffer; nothing is allocated per sample. Every read checks the message's end, a
varint longer than 10 bytes or a negative or oversized length makes the message
UNDECODABLE, and a message that does not end exactly at its last field is TRAILING. A
message the kernel cannot decode is never guessed at: the caller hands it to the
readable twin for its exact verdict.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OK = 0
EMPTY = 1
BAD_MAGIC = 2
OTHER_SCHEMA = 3
UNDECODABLE = 4
TRAILING = 5
INVALID = 6  # decoded, but failed a check: the twin gives the exact reason

# Per-sample string columns and integer columns of v1, in schema order.
S_GPU, S_SKU, S_TENANT, S_JOB = range(4)
V_GPU_INDEX, V_TICK_START, V_TICK_END, V_ALLOC, V_BUSY, V_UNHEALTHY, V_ENERGY, V_MEMORY = range(8)
MIN_SAMPLE_BYTES = 12  # 4 one-byte string lengths + 8 one-byte varints


@njit(cache=True, inline="always")
def _long(buf, pos, end):
    """Zigzag varint at ``pos``; returns (value, next position), next = -1 on error."""
    result = np.uint64(0)
    shift = np.uint64(0)
    for _ in range(10):
        if pos >= end:
            return np.int64(0), -1
        byte = buf[pos]
        pos += 1
        result |= np.uint64(byte & 0x7F) << shift
        if byte < 0x80:
            value = np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1))
            return value, pos
        shift += np.uint64(7)
    return np.int64(0), -1


@njit(cache=True, inline="always")
def _string(buf, pos, end):
    """(offset, length, next position) of a string at ``pos``; next = -1 on error."""
    length, pos = _long(buf, pos, end)
    if pos < 0 or length < 0 or length > end - pos:
        return 0, 0, -1
    return pos, length, pos + length


@njit(cache=True, nogil=True)
def decode_v1(
    buf,
    msg_off,
    msg_len,
    fingerprint,
    capacity,
    m_status,
    m_str_off,
    m_str_len,
    m_long,
    m_first,
    m_count,
    s_msg,
    s_str_off,
    s_str_len,
    s_val,
):
    """Decode every message; returns the number of samples found (may exceed capacity).

    Per message: m_str_* [node_id, boot_id, cluster], m_long [seq, start, end]. Per sample
    (only while the count is below ``capacity``): s_str_* [gpu, sku, tenant, job] and
    s_val [gpu_index, tick_start, tick_end, allocated, busy, unhealthy, energy, memory].
    """
    total = 0
    for m in range(msg_off.shape[0]):
        start = msg_off[m]
        end = start + msg_len[m]
        m_first[m] = total
        m_count[m] = 0
        if msg_len[m] == 0:
            m_status[m] = EMPTY
            continue
        if msg_len[m] < 10 or buf[start] != 0xC3 or buf[start + 1] != 0x01:
            m_status[m] = BAD_MAGIC
            continue
        same = True
        for i in range(8):
            if buf[start + 2 + i] != fingerprint[i]:
                same = False
        if not same:
            m_status[m] = OTHER_SCHEMA
            continue
        pos = start + 10
        status = OK
        for f in range(2):  # node_id, boot_id
            o, n, pos = _string(buf, pos, end)
            if pos < 0:
                break
            m_str_off[m, f] = o
            m_str_len[m, f] = n
        if pos >= 0:
            m_long[m, 0], pos = _long(buf, pos, end)  # seq
        if pos >= 0:
            o, n, pos = _string(buf, pos, end)  # cluster
            m_str_off[m, 2] = o
            m_str_len[m, 2] = n
        if pos >= 0:
            m_long[m, 1], pos = _long(buf, pos, end)
        if pos >= 0:
            m_long[m, 2], pos = _long(buf, pos, end)
        count = 0
        while pos >= 0:
            block, pos = _long(buf, pos, end)
            if pos < 0 or block == 0:
                break
            if block < 0:
                block = -block
                _, pos = _long(buf, pos, end)  # the block's byte size, not needed
                if pos < 0:
                    break
            if block > (end - pos) // MIN_SAMPLE_BYTES + 1:
                pos = -1  # claims more samples than the bytes left can hold
                break
            for _ in range(block):
                k = total + count
                write = k < capacity
                o, n, pos = _string(buf, pos, end)  # gpu_uuid
                if pos < 0:
                    break
                if write:
                    s_str_off[k, S_GPU] = o
                    s_str_len[k, S_GPU] = n
                v, pos = _long(buf, pos, end)  # gpu_index, an Avro int
                if pos < 0 or v < -2147483648 or v > 2147483647:
                    pos = -1
                    break
                if write:
                    s_val[k, V_GPU_INDEX] = v
                for f in range(S_SKU, S_JOB + 1):
                    o, n, pos = _string(buf, pos, end)
                    if pos < 0:
                        break
                    if write:
                        s_str_off[k, f] = o
                        s_str_len[k, f] = n
                if pos < 0:
                    break
                for f in range(V_TICK_START, V_MEMORY + 1):
                    v, pos = _long(buf, pos, end)
                    if pos < 0:
                        break
                    if write:
                        s_val[k, f] = v
                if pos < 0:
                    break
                if write:
                    s_msg[k] = m
                count += 1
        if pos < 0:
            status = UNDECODABLE
        elif pos != end:
            status = TRAILING
        m_status[m] = status
        if status == OK:
            m_count[m] = count
            total += count
    return total
