"""Kafka in: whole fetches of record batches, parsed and checked (CRC, lengths) into
message blocks, handed to the processors a batch at a time, past Faust's per-message path."""
