"""Running the Faust app as a long-lived worker process."""

from __future__ import annotations

import faust

from streams.app import create_app
from streams.settings import WorkerSettings


def run_worker(settings: WorkerSettings, loglevel: str = "info") -> None:
    """Block until the worker is stopped (SIGTERM/SIGINT)."""
    settings.datadir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
