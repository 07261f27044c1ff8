"""Running the Faust app as a long-lived worker process."""

from __future__ import annotations

import logging

import faust

from streams.host.app import create_app
from streams.host.settings import WorkerSettings
from streams.host.topics import ensure_topics
from streams.processing.hotpath.warmup import warm_up

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings, loglevel: str = "info") -> None:
    """Block until the worker is stopped (SIGTERM/SIGINT)."""
    settings.datadir.mkdir(parents=True, exist_ok=True)
    prepare_topics(settings)
    if settings.hot_path:
        log.info("compiling the hot path (a minute on a first run; cached on disk after)")
        log.info("hot path compiled in %.1f s", warm_up())
    app = create_app(settings)
    # Logging is configured by the command (core/logs.py), one format for every logger.
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    # Its start-up spinner writes terminal control codes even into a log file.
    worker.spinner = None
    worker.execute_from_commandline()


def prepare_topics(settings: WorkerSettings) -> dict[str, int]:
    """Create the usage topic with ``settings.partitions`` and the dead-letter topic, unless
    they exist; a usage topic that exists with another count keeps it (partitions cannot
    be taken away, and adding them moves nodes between partitions), which is logged."""
    found = ensure_topics(
        settings.bootstrap,
        {settings.topic: settings.partitions, settings.dlq_topic: 1},
        replication=settings.replication_factor,
    )
    if found.get(settings.topic, settings.partitions) != settings.partitions:
        log.warning(
            "topic %s exists with %d partitions, not the %d asked for: using it as it is",
            settings.topic,
            found[settings.topic],
            settings.partitions,
        )
    return found
