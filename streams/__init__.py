"""Faust stream processors: usage reports in, rollups and rejections out.

The pure parts (``validate``, ``aggregate``, ``processor``) import neither Faust nor
ClickHouse; ``app`` wires them to Faust and ``sink`` to ClickHouse.
"""
