"""The management command both agent workers share: `dev` or `start`, then run until drained."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from .server import WorkerSpec, run_worker


class AgentWorkerCommand(BaseCommand):
    def worker_spec(self) -> WorkerSpec:
        raise NotImplementedError

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "mode",
            choices=["dev", "start"],
            help="dev: debug logs, no idle process pool; "
            "start: production (prewarmed processes, load threshold, health endpoint)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The exit status is the contract with supervisors: 0 after a drain,
        # non-zero when LiveKit could not be reached.
        sys.exit(run_worker(self.worker_spec(), mode=options["mode"]))
