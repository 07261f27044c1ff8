from collections import Counter

from streams.contract import ProcessorSettings, SourceMessage
from streams.processing.processor import PartitionProcessor
from streams.processing.state import PartitionState
from tests.malformed import malformed_messages


def test_every_malformed_kind_is_rejected_for_its_own_reason():
    cases = list(malformed_messages(1_400, seed=5))
    processor = PartitionProcessor(PartitionState("usage", 0), ProcessorSettings())
    now_us = 1_793_600_000_000_000
    out = processor.process(
        SourceMessage("usage", 0, i, key, value, now_us) for i, (key, value, _) in enumerate(cases)
    )
    assert [r.reason for r in out.rejections] == [reason for *_, reason in cases]
    assert out.accepted_reports == 0 and out.duplicate_reports == 0 and not out.gap_rows
    assert len(Counter(reason for *_, reason in cases)) == 14
