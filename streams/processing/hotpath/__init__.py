"""The vectorized hot path: compiled (numba) decode, validation, aggregation and ledger
encoding over a whole batch of messages, with the readable
:class:`~streams.processing.processor.PartitionProcessor` as its twin: same contract, same output.
"""
