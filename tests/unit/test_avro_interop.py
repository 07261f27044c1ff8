"""Our codec against the Apache ``avro`` package, an independent implementation."""

import io
import json

import avro.io
import avro.schema

from schemas import ReportCodec, load_released_versions
from tests.factories import make_report, make_sample


def _apache_schema(version):
    return avro.schema.parse(json.dumps(version.schema_json))


def test_apache_avro_computes_the_same_fingerprint():
    for version in load_released_versions():
        assert _apache_schema(version).fingerprint("CRC-64-AVRO") == version.fingerprint


def test_apache_avro_reads_our_bytes():
    version = load_released_versions()[-1]
    report = make_report([make_sample(), make_sample(gpu_index=1, energy_mj=2**40)], seq=9)
    frame = ReportCodec().encode(report)
    assert frame[:10] == version.header
    decoder = avro.io.BinaryDecoder(io.BytesIO(frame[10:]))
    assert avro.io.DatumReader(_apache_schema(version)).read(decoder) == report


def test_we_read_apache_avro_bytes():
    version = load_released_versions()[-1]
    report = make_report([make_sample(tenant_id="borealis-ai")], seq=3)
    body = io.BytesIO()
    avro.io.DatumWriter(_apache_schema(version)).write(report, avro.io.BinaryEncoder(body))
    assert ReportCodec().decode(version.header + body.getvalue()) == report
