"""The engine's cost per job on a farm, named without timing: how many idle workers a new task wakes,
how often a workflow is checked against the servers' node lists, how jobs spread over equal servers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from hotfolder.engine.core import Core
from hotfolder.engine.scheduler import Scheduler
from tests.conftest import make_settings, wait_until


class CountingCondition(threading.Condition):
    """A condition that counts the waits of job workers that ended because they were notified."""

    def __init__(self, lock: Any, counts: dict[str, int]) -> None:
        super().__init__(lock)
        self.counts = counts

    def wait(self, timeout: float | None = None) -> bool:
        notified = super().wait(timeout)
        if notified and threading.current_thread().name.startswith("job-worker"):
            self.counts["woken"] += 1
        return notified


def _scheduler(project: Path, servers: int, submit_side: Any) -> tuple[Scheduler, dict[str, int]]:
    urls = [f"http://127.0.0.1:{9000 + i}" for i in range(servers)]
    core = Core(make_settings(project, urls[0], servers=urls, queue_depth=2), [], None)
    counts = {"woken": 0}
    core.cond = CountingCondition(core.lock, counts)
    scheduler = Scheduler(core, urls, submit_side=submit_side, output_side=lambda handed: None,
                          is_down=lambda name: False)
    scheduler._work = CountingCondition(core.lock, counts)
    return scheduler, counts


def _idle_waiters(scheduler: Scheduler) -> int:
    with scheduler.core.cond:
        return sum(len(c._waiters) for c in (scheduler.core.cond, scheduler._work))  # type: ignore[attr-defined]


def test_a_new_task_wakes_one_idle_worker_not_all(project: Path) -> None:
    release = threading.Event()
    done: list[object] = []

    def submit_side(record: object, job: object) -> None:
        release.wait(20)
        done.append(job)

    scheduler, counts = _scheduler(project, 8, submit_side)  # 24 job workers
    scheduler.start()
    try:
        wait_until(lambda: _idle_waiters(scheduler) == scheduler.workers, message="every worker idle")
        counts["woken"] = 0
        scheduler.add([(object(), object()) for _ in range(3)])
        wait_until(lambda: scheduler.running == 3 and _idle_waiters(scheduler) == scheduler.workers - 3,
                   message="three workers busy")
        release.set()  # the jobs end: the others stay asleep (their end concerns drain and intake)
        wait_until(lambda: len(done) == 3 and scheduler.running == 0
                   and _idle_waiters(scheduler) == scheduler.workers, message="jobs done")
        assert counts["woken"] == 3, f"{counts['woken']} wake-ups of idle workers for 3 tasks"
    finally:
        scheduler.core.stop.set()
        with scheduler.core.cond:
            scheduler.wake_all()
        for t in scheduler.core.threads:
            t.join(5)
