"""The vectorized hot path: a whole batch of messages in compiled (numba) code, with the
readable :class:`~streams.processing.processor.PartitionProcessor` as its twin (same
contract, same output), by stage:

- ``schemas.compiled_decoder``: Avro frames of every message into flat arrays (one row per
  sample), beside the schema and its other two implementations;
- ``strings``: UTF-8 and name checks, hashes, interning of names to small integers;
- ``checks``: validation as ``streams/processing/validate.py`` does it;
- ``windows``: samples to windows, lateness, grouping and sums, each GPU's metered time;
- ``ledger``: the ledger's Native block, byte for byte what ``streams/output/native.py``
  writes;
- ``processor``: the batch through those stages, handing the twin what they cannot judge;
  ``warmup`` compiles every kernel before a worker joins its group.
"""
