"""The wire contract: released Avro schema versions of the node usage report and their codec."""

from schemas.codec import (
    CURRENT_VERSION,
    SINGLE_OBJECT_MAGIC,
    ReportCodec,
    SchemaVersion,
    crc64_avro,
    load_released_versions,
)
from schemas.errors import DecodeError, UnknownSchemaError

__all__ = [
    "CURRENT_VERSION",
    "SINGLE_OBJECT_MAGIC",
    "DecodeError",
    "ReportCodec",
    "SchemaVersion",
    "UnknownSchemaError",
    "crc64_avro",
    "load_released_versions",
]
