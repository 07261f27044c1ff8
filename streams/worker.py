"""Running the Faust app as a long-lived worker process."""

from __future__ import annotations

import logging

import faust

from streams.app import create_app
from streams.hotpath.warmup import warm_up
from streams.settings import WorkerSettings

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings, loglevel: str = "info") -> None:
    """Block until the worker is stopped (SIGTERM/SIGINT)."""
    settings.datadir.mkdir(parents=True, exist_ok=True)
    if settings.hot_path:
        log.info("hot path compiled in %.1f s", warm_up())
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
