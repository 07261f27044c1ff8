"""Avro single-object encoding of usage reports, with no registry server.

Frame: ``C3 01`` + the writer schema's CRC-64-AVRO fingerprint (8 bytes, little-endian) +
the Avro binary body. The reader looks the fingerprint up among the released schema
versions shipped in this package and resolves the writer schema to the current reader
schema, so every released version stays readable after a new one is added.

The fingerprint is computed here from the Avro specification rather than borrowed from a
library, and the interop test checks it against the Apache ``avro`` package.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import parse_schema, to_parsing_canonical_form

from core import reasons
from schemas.errors import DecodeError, UnknownSchemaError

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_HEADER_LEN = len(SINGLE_OBJECT_MAGIC) + 8
_VERSION_FILE = re.compile(r"^usage_report\.v(\d+)\.avsc$")

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO ("Rabin") fingerprint of ``data``, as the Avro spec defines it."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    schema_json: dict[str, Any]  # the .avsc file as released
    schema: dict[str, Any]  # as parsed by fastavro
    canonical_form: str
    fingerprint: bytes  # 8 bytes, little-endian, as written in the frame

    @property
    def header(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.fingerprint


def _schema_version(version: int, raw: dict[str, Any]) -> SchemaVersion:
    canonical = to_parsing_canonical_form(raw)
    fingerprint = crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")
    return SchemaVersion(version, raw, parse_schema(raw), canonical, fingerprint)


@cache
def load_released_versions() -> tuple[SchemaVersion, ...]:
    """Every released ``usage_report.vN.avsc`` in this package, oldest first."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _VERSION_FILE.match(entry.name)
        if match:
            found.append(_schema_version(int(match.group(1)), json.loads(entry.read_text("utf-8"))))
    if not found:
        raise RuntimeError("no released usage_report schema versions are packaged")
    return tuple(sorted(found, key=lambda v: v.version))


CURRENT_VERSION: int = load_released_versions()[-1].version


class ReportCodec:
    """Encodes with one released version (the newest by default); decodes any released one."""

    def __init__(self, writer_version: int | None = None) -> None:
        versions = load_released_versions()
        self._by_fingerprint = {v.fingerprint: v for v in versions}
        by_number = {v.version: v for v in versions}
        self.reader = versions[-1]
        if writer_version is None:
            self.writer = self.reader
        elif writer_version in by_number:
            self.writer = by_number[writer_version]
        else:
            raise ValueError(f"no released schema version {writer_version}")

    def encode(self, report: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.writer.header)
        fastavro.schemaless_writer(buf, self.writer.schema, report)
        return buf.getvalue()

    def writer_of(self, frame: bytes) -> SchemaVersion:
        """The released version that wrote ``frame``; raises :class:`DecodeError`."""
        if not frame:
            raise DecodeError(reasons.EMPTY_MESSAGE, "zero-length message")
        if len(frame) < _HEADER_LEN or not frame.startswith(SINGLE_OBJECT_MAGIC):
            raise DecodeError(
                reasons.BAD_MAGIC, f"expected C3 01 + 8-byte fingerprint, got {frame[:10].hex()}"
            )
        fingerprint = bytes(frame[2:_HEADER_LEN])
        version = self._by_fingerprint.get(fingerprint)
        if version is None:
            raise UnknownSchemaError(fingerprint)
        return version

    def decode(self, frame: bytes) -> dict[str, Any]:
        """One framed report as a dict in the current reader schema."""
        writer = self.writer_of(frame)
        body = io.BytesIO(frame)
        body.seek(_HEADER_LEN)
        try:
            report = fastavro.schemaless_reader(body, writer.schema, self.reader.schema)
        except Exception as exc:  # fastavro raises several unrelated types on bad bytes
            raise DecodeError(
                reasons.UNDECODABLE, f"v{writer.version} body: {type(exc).__name__}: {exc}"
            ) from exc
        if body.tell() != len(frame):
            raise DecodeError(
                reasons.TRAILING_BYTES,
                f"{len(frame) - body.tell()} bytes after the v{writer.version} body",
            )
        if not isinstance(report, dict):
            raise DecodeError(reasons.UNDECODABLE, "body is not a record")
        return report
