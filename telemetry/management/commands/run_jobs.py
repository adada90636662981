from __future__ import annotations

import asyncio
import contextlib
import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from telemetry import scheduler


class Command(BaseCommand):
    help = (
        "Run the background jobs (rollups, alerts, periods, reconcile, retention). With --once "
        "each named job (default: all) runs once, for cron; without it they run at their "
        "intervals until interrupted."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("jobs", nargs="*", metavar="job", help="job names (default: all)")
        parser.add_argument("--once", action="store_true", help="run each job once and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        names: list[str] = options["jobs"] or [job.name for job in scheduler.JOBS]
        unknown = [name for name in names if name not in scheduler.JOBS_BY_NAME]
        if unknown:
            known = ", ".join(job.name for job in scheduler.JOBS)
            raise CommandError(f"unknown job {', '.join(unknown)}; jobs are: {known}")
        jobs = [scheduler.JOBS_BY_NAME[name] for name in names]
        if not options["once"]:
            runner = scheduler.Scheduler(
                [scheduler.Job(j.name, j.run, j.interval, 0) for j in jobs]
            )
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(runner.run())
            return
        failed = []
        for job in jobs:
            outcome = scheduler.run_job(job)
            if not outcome.ok:
                failed.append(job.name)
                self.stderr.write(f"{job.name}: failed (see the log)")
                continue
            result = json.dumps(outcome.result, default=str, sort_keys=True)
            self.stdout.write(f"{job.name}: ok in {outcome.seconds:.2f}s {result}")
        if failed:
            raise CommandError(f"failed: {', '.join(failed)}")
