"""The engine's cost per job on a farm, named without timing: how many idle workers a new task wakes,
how often a workflow is checked against the servers' node lists, how jobs spread over equal servers."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hotfolder.comfy.object_info import ObjectInfoCache
from hotfolder.engine.core import Core
from hotfolder.engine.routing import Router
from hotfolder.engine.scheduler import Scheduler
from hotfolder.record import JobState
from hotfolder.templates import validate
from hotfolder.testing import ComfyTestServer
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


WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15_random.safetensors"}},
    "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "m", "images": ["1", 0]}},
    "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
}


def _router(project: Path, servers: list[Any]) -> Router:
    return Router(Core(make_settings(project, "", servers=servers), [], None))


def test_a_workflow_is_checked_once_per_distinct_catalogue(project: Path, comfy: ComfyTestServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    other = ComfyTestServer().start()
    try:
        comfy.set_models("checkpoints", ["tiny_sd15_random.safetensors"])
        other.set_models("checkpoints", ["other.safetensors"])  # lacks the workflow's model
        twin = comfy.url.replace("127.0.0.1", "localhost")  # the same server, so the same catalogue
        router = _router(project, [other.url, comfy.url, twin])
        checked: list[object] = []
        real = validate.validate_with_refresh  # what routing runs per server
        monkeypatch.setattr(validate, "validate_with_refresh", lambda *a, **kw: checked.append(a) or real(*a, **kw))
        reads: list[object] = []
        get = ObjectInfoCache.get
        monkeypatch.setattr(ObjectInfoCache, "get", lambda self, **kw: reads.append(self) or get(self, **kw))
        chosen = [router.pick(JobState(index=i, name=f"j{i}"), WORKFLOW).name for i in range(4)]
        assert other.url not in chosen, "a server without the model was chosen"
        assert set(chosen) == {router.clients[1].name, router.clients[2].name}
        assert len(checked) == 2 * 4, f"{len(checked)} checks for 4 jobs on 2 distinct catalogues"
        assert len(reads) == 3 * 4, f"{len(reads)} reads of the /object_info caches for 4 jobs on 3 servers"
        other.set_models("checkpoints", ["tiny_sd15_random.safetensors"])  # it gets the model ...
        router.object_info[router.clients[0].name].invalidate()  # ... and its /object_info is read again
        chosen = [router.pick(JobState(index=i, name=f"k{i}"), WORKFLOW).name for i in range(3)]
        assert router.clients[0].name in chosen
    finally:
        other.stop()


def test_jobs_spread_evenly_over_equal_servers(project: Path, comfy: ComfyTestServer) -> None:
    router = _router(project, [{"url": comfy.url, "name": f"gpu{i}"} for i in range(4)])
    chosen = [router.pick(JobState(index=i, name=f"j{i}"), WORKFLOW).name for i in range(12)]
    assert Counter(chosen) == {c.name: 3 for c in router.clients}
