"""A compiled encoder of usage report v1 frames from decoded templates, for the load
generator (``bench/loadgen.py``): each node's later reports are its first report with
``seq`` set and every timestamp moved on, written straight from the decoded columns
(strings copied, longs re-encoded). It writes the same bytes as ``schemas/codec.py``
would for the same report (tested against it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from schemas import compiled_decoder as d

HEADER_BYTES = 10  # single-object marker + schema fingerprint


@njit(cache=True, inline="always")
def _put_long(out, pos, value):
    z = np.uint64((value << 1) ^ (value >> 63))  # zigzag
    while z >= np.uint64(0x80):
        out[pos] = np.uint8((z & np.uint64(0x7F)) | np.uint64(0x80))
        z >>= np.uint64(7)
        pos += 1
    out[pos] = np.uint8(z)
    return pos + 1


@njit(cache=True, inline="always")
def _put_string(out, pos, buf, off, n):
    pos = _put_long(out, pos, n)
    for b in range(n):
        out[pos + b] = buf[off + b]
    return pos + n


@njit(cache=True)
def encode_shifted(
    buf,
    msg_off,
    m_str_off,
    m_str_len,
    m_long,
    m_first,
    m_count,
    s_str_off,
    s_str_len,
    s_val,
    seq,
    shift_us,
    out,
    out_off,
):
    """Re-encode every decoded report with ``seq`` and all timestamps + ``shift_us``.

    ``out`` must hold each template's length plus 20 bytes per long that may grow; report
    ``m`` is written at ``out[out_off[m]:out_off[m + 1]]``.
    """
    pos = 0
    for m in range(msg_off.shape[0]):
        out_off[m] = pos
        for b in range(HEADER_BYTES):
            out[pos + b] = buf[msg_off[m] + b]
        pos += HEADER_BYTES
        pos = _put_string(out, pos, buf, m_str_off[m, 0], m_str_len[m, 0])  # node_id
        pos = _put_string(out, pos, buf, m_str_off[m, 1], m_str_len[m, 1])  # boot_id
        pos = _put_long(out, pos, seq)
        pos = _put_string(out, pos, buf, m_str_off[m, 2], m_str_len[m, 2])  # cluster
        pos = _put_long(out, pos, m_long[m, 1] + shift_us)
        pos = _put_long(out, pos, m_long[m, 2] + shift_us)
        if m_count[m] > 0:
            pos = _put_long(out, pos, m_count[m])  # one block holding every sample
        for k in range(m_first[m], m_first[m] + m_count[m]):
            pos = _put_string(out, pos, buf, s_str_off[k, d.S_GPU], s_str_len[k, d.S_GPU])
            pos = _put_long(out, pos, s_val[k, d.V_GPU_INDEX])
            for f in range(d.S_SKU, d.S_JOB + 1):
                pos = _put_string(out, pos, buf, s_str_off[k, f], s_str_len[k, f])
            pos = _put_long(out, pos, s_val[k, d.V_TICK_START] + shift_us)
            pos = _put_long(out, pos, s_val[k, d.V_TICK_END] + shift_us)
            for f in range(d.V_ALLOC, d.V_MEMORY + 1):
                pos = _put_long(out, pos, s_val[k, f])
        out[pos] = 0  # end of the samples array
        pos += 1
    out_off[msg_off.shape[0]] = pos
