"""The local stack: a Tansu broker and a ClickHouse server on free loopback ports."""

from stack.stack import LocalStack, StackInfo

__all__ = ["LocalStack", "StackInfo"]
