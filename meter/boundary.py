"""What a person sees when a command fails: one line naming the problem and the fix.

The ``meter`` entry point turns every failure a person's mistake or an unreachable server
can cause (a ClickHouse server error, by its code; the network; Kafka; files) into one
line and exit status 2, and shows a traceback only with ``--debug``. Anything not
recognised here is a defect of ours and keeps its traceback.
"""

from __future__ import annotations

import re

from clickhouse_driver import errors as ch_errors
from kafka import errors as kafka_errors

from core.errors import MeterError

# ClickHouse error codes (src/Common/ErrorCodes.cpp) a person's mistake produces.
_UNKNOWN_TABLE, _UNKNOWN_DATABASE, _READONLY = 60, 81, 164
_AUTHENTICATION = {192, 193, 194, 516}  # unknown user, wrong password, password needed
_ACCESS_DENIED = 497


def _server_text(exc: ch_errors.ServerException) -> str:
    """The server's own first line, without its code prefix or stack trace."""
    text = str(exc.message).split("Stack trace:")[0].strip()
    text = re.sub(r"^(DB::Exception:\s*)+", "", text.splitlines()[-1] if text else "")
    return text.rstrip(". ,") or f"error {exc.code}"


def _clickhouse(exc: ch_errors.ServerException) -> str:
    text = _server_text(exc)
    if exc.code in _AUTHENTICATION:
        return (
            f"ClickHouse refused the login ({text}): check the user and password in "
            "--clickhouse-url (clickhouse://USER:PASSWORD@HOST:PORT/DATABASE)"
        )
    if exc.code == _UNKNOWN_DATABASE:
        return (
            f"{text}: run `meter migrate` with the same --clickhouse-url to create it, or "
            "pass --database NAME of an existing one"
        )
    if exc.code == _UNKNOWN_TABLE:
        return f"{text}: the database is not migrated; run `meter migrate` first"
    if exc.code in (_READONLY, _ACCESS_DENIED):
        return (
            f"this ClickHouse user may not do that ({text}): run it as the pipeline's "
            "user, not a read-only one such as finance"
        )
    return f"ClickHouse refused the query: {text} (code {exc.code})"


def explain(exc: BaseException) -> str | None:
    """One line for ``exc``, or None when it is not a failure of the world outside."""
    if isinstance(exc, MeterError):
        return str(exc)
    if isinstance(exc, ch_errors.ServerException):
        return _clickhouse(exc)
    if isinstance(exc, ch_errors.NetworkError | ch_errors.SocketTimeoutError):
        return (
            f"cannot reach ClickHouse ({exc.message}): is the server running, and are host "
            "and native port right in --clickhouse-url?"
        )
    if isinstance(exc, kafka_errors.KafkaTimeoutError | kafka_errors.BrokerNotAvailableError):
        return (
            f"cannot reach the Kafka broker ({exc}): is it running, and is --bootstrap "
            "HOST:PORT right?"
        )
    if isinstance(exc, kafka_errors.InvalidTopicError):
        return f"the broker refused the topic name ({exc}): use letters, digits, '.', '_', '-'"
    if isinstance(exc, kafka_errors.KafkaError):
        return f"Kafka: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"network: {exc}"
    return None
