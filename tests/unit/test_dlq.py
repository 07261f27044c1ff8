"""Dead letters (streams/output/dlq.py): their headers round-trip."""

from streams.contract import Rejection, SourceMessage
from streams.output.dlq import dead_letter_headers, parse_headers
from warehouse.client import ClickHouseSettings

CH = ClickHouseSettings()


def test_dead_letter_headers_round_trip():
    rejection = Rejection(
        SourceMessage("usage", 4, 77, b"k", b"v", 0),
        "negative_counter",
        "sample 0: x",
        node_id="n1",
        boot_id="b1",
        seq=12,
    )
    headers = parse_headers(dead_letter_headers(rejection))
    assert headers == {
        "reason": "negative_counter",
        "detail": "sample 0: x",
        "topic": "usage",
        "partition": "4",
        "offset": "77",
        "node_id": "n1",
        "boot_id": "b1",
        "seq": "12",
        "payload_size": "1",
        "payload": "whole",
        "payload_sha256": "4c94485e0c21ae6c41ce1dfe7b6bfaceea5ab68e40a2476f50208e526f506080",
    }
