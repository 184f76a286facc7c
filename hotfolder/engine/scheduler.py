"""The scheduler: job workers, each server's in-flight places and output workers, and backpressure.
It knows nothing of what a job does: it runs ``submit_side(record, job)`` on a job worker and hands
what that returns to the output workers of its server, which run ``output_side`` on it.

Job workers: one per allowed in-flight prompt per server plus one, so each server always has the next
prompt queued behind the running one. Output workers: one per server to start, more (up to
``output_workers``) while finished jobs wait longer than OUTPUT_WAIT; one beyond the first stops after
OUTPUT_IDLE seconds without work. Backpressure: when more finished jobs wait for the output workers
than ``_handoff_cap``, submitting pauses (the outputs cannot keep up, and a server's history, where
they are listed, is not kept forever).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hotfolder.comfy.client import Cancelled, ComfyClient
from hotfolder.engine.core import Core, logger
from hotfolder.record import FileRecord, JobState

OUTPUT_WAIT = 1.0  # seconds a finished job may wait for an output worker before another one starts
OUTPUT_IDLE = 60.0  # seconds without work after which an output worker beyond a server's first stops


class Slots:
    """Each server's in-flight places (``queue_depth`` prompts at a time); waiting for one ends when the
    engine stops, or when ``give_up`` raises (the job was cancelled)."""

    def __init__(self, servers: list[str], depth: int, stop: threading.Event) -> None:
        self._sems = {name: threading.Semaphore(depth) for name in servers}
        self._stop = stop

    @contextlib.contextmanager
    def hold(self, client: ComfyClient, give_up: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold one of ``client``'s places. ``give_up()`` is called while waiting for one: it raises to
        stop waiting (the job was cancelled meanwhile)."""
        sem = self._sems[client.name]
        while not sem.acquire(timeout=0.5):
            if self._stop.is_set():
                raise Cancelled("stopping")
            give_up()
        try:
            yield
        finally:
            sem.release()


class Scheduler:
    """Runs jobs on worker threads. ``submit_side(record, job)`` returns the hand-off (with ``client``
    and ``since`` attributes) or None when the job ended; ``output_side(handed)`` does the rest.
    ``is_down(server)`` says whether a server is away (its finished jobs do not count as backlog);
    ``held(job)`` whether a job must wait for now (paused: no worker takes it, nor counts it as backlog);
    ``ended(record, job)`` whether it will send nothing (cancelled): it does not wait its turn behind the
    others, but runs at once on a thread of its own (see :meth:`end_now`)."""

    def __init__(self, core: Core, servers: list[str], *, submit_side: Callable[[FileRecord, JobState], Any],
                 output_side: Callable[[Any], None], is_down: Callable[[str], bool],
                 held: Callable[[JobState], bool] = lambda job: False,
                 ended: Callable[[FileRecord, JobState], bool] = lambda record, job: False) -> None:
        settings = core.settings
        self.core = core
        self.slots = Slots(servers, settings.queue_depth, core.stop)
        self._submit_side, self._output_side, self._is_down = submit_side, output_side, is_down
        self._held, self._ended = held, ended
        self.workers = (settings.queue_depth + 1) * len(servers)
        self._tasks: list[tuple[FileRecord, JobState]] = []
        # Idle job workers (no task at all) wait on their own condition, woken one per task added: on
        # ``core.cond`` every change (a job ending, a file parsed) would wake all of them. A worker that
        # sees tasks it may not take now (paused, draining, backlog) waits on ``core.cond`` as before.
        self._work = threading.Condition(core.lock)
        self.running = 0  # jobs taken by a worker and not yet done: submitting, tracking, or with the output workers
        # Each server has its own output workers (a server that went away with outputs still to fetch
        # holds up only its own), waiting on their own condition, woken one per finished job.
        self._outputs_ready = {name: threading.Condition(core.lock) for name in servers}
        self._handoff: dict[str, list[Any]] = {name: [] for name in servers}  # prompt ended, outputs to fetch
        self._output_threads = dict.fromkeys(servers, 0)  # output workers running, per server
        self._output_serial = 0  # numbers the output workers' thread names
        self._handoff_cap = 8 * settings.output_workers * len(servers)
        self._backlog_logged = False

    def start(self) -> None:
        core = self.core
        for i in range(self.workers):
            self._thread(self._worker, f"job-worker-{i}")
        with core.cond:
            for server in self._handoff:
                self._start_output_worker(server)
        self._thread(self._watch_outputs, "output-watch")

    def _thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.core.threads.append(t)

    def wake_all(self) -> None:
        """Wake every waiting worker (stopping). Called with the lock held."""
        self.core.cond.notify_all()
        self._work.notify_all()
        for ready in self._outputs_ready.values():
            ready.notify_all()

    def add(self, jobs: list[tuple[FileRecord, JobState]]) -> None:
        with self.core.cond:
            jobs, ended = self._split(jobs)
            self._run_now(ended)
            self._tasks.extend(jobs)
            self._work.notify(len(jobs))  # one idle worker per task, not all of them
            self.core.cond.notify_all()  # the workers waiting for tasks they may take (see _wait_for_task)

    def end_now(self) -> None:
        """Run the waiting jobs that will send nothing (just cancelled) now, not when a worker gets to
        them: every worker may be waiting for a server's place, with a backlog before them."""
        with self.core.cond:
            self._tasks, ended = self._split(self._tasks)
            self._run_now(ended)
            self.core.cond.notify_all()  # a cancelled job waiting for a resume checks its flag now

    def _split(self, tasks: list[tuple[FileRecord, JobState]]) -> tuple[list[tuple[FileRecord, JobState]],
                                                                       list[tuple[FileRecord, JobState]]]:
        """``tasks`` as (those to queue, those that will send nothing)."""
        keep: list[tuple[FileRecord, JobState]] = []
        ended: list[tuple[FileRecord, JobState]] = []
        for task in tasks:
            (ended if self._ended(*task) else keep).append(task)
        return keep, ended

    def _run_now(self, tasks: list[tuple[FileRecord, JobState]]) -> None:
        """Run ``tasks`` one after the other on a new thread (called with the lock held)."""
        if not tasks:
            return
        self.running += len(tasks)
        t = threading.Thread(target=self._run_ended, args=(tasks,), name="job-ending", daemon=True)
        self.core.threads.append(t)  # stop joins it; it leaves the list when it is done
        t.start()

    def _run_ended(self, tasks: list[tuple[FileRecord, JobState]]) -> None:
        """The thread of :meth:`_run_now`: each job's first step ends it. Jobs it could not run (it was
        torn down) go back to the queue."""
        done = 0
        try:
            for record, job in tasks:
                done += 1
                self._run(record, job)
        finally:
            with self.core.cond:
                self._tasks[0:0] = tasks[done:]
                self.running -= len(tasks) - done
                self.core.threads.remove(threading.current_thread())
                self.core.cond.notify_all()

    def full(self) -> bool:
        """Whether enough jobs wait for workers that intake should wait (called with the lock held).
        Held jobs (paused) do not count: files keep being claimed while submitting is paused."""
        return sum(1 for _, job in self._tasks if not self._held(job)) >= 2 * self.workers

    def _next_task(self) -> int | None:
        """The index of the first task a worker may take now (not held), None if there is none."""
        return next((i for i, (_, job) in enumerate(self._tasks) if not self._held(job)), None)

    def _worker(self) -> None:
        """Submit and track jobs; hand each one whose prompt ended to the output workers."""
        core = self.core
        while not core.stop.is_set():
            with core.cond:
                index = self._wait_for_task()
                if index is None:
                    return
                record, job = self._tasks.pop(index)
                self.running += 1
                core.cond.notify_all()
            self._run(record, job)

    def _run(self, record: FileRecord, job: JobState) -> None:
        """Run the job's submitting side (counted in ``running``) and hand it on or count it done."""
        core = self.core
        handed = None
        try:
            handed = self._submit_side(record, job)
        finally:
            with core.cond:
                if handed is None:
                    self.running -= 1
                    core.cond.notify_all()
                else:  # still running: it is the output workers' now
                    self._handoff[handed.client.name].append(handed)
                    self._outputs_ready[handed.client.name].notify()

    def _wait_for_task(self) -> int | None:
        """Wait until a task may be taken and return its index; None when stopping. With no task at all
        the worker waits on ``_work`` (woken by :meth:`add`, one per task); with tasks it may not take
        now, on ``core.cond``, woken by every change (resume, drain, backlog freed). Lock held."""
        core = self.core
        while not core.stop.is_set():
            index = self._next_task()
            if index is not None and not core.draining.is_set() and not self._backlogged():
                return index
            (core.cond if self._tasks else self._work).wait(1.0)
        return None

    def _backlogged(self) -> bool:
        """Whether finished jobs wait for the output workers in such numbers that submitting must pause
        (called with the lock held). Jobs waiting for a server that is away do not count: they wait for
        it, not for the output workers, and must not stop the other servers' work."""
        waiting = sum(len(jobs) for name, jobs in self._handoff.items() if not self._is_down(name))
        if waiting < self._handoff_cap:
            if waiting < self._handoff_cap // 2:
                self._backlog_logged = False  # warn again only after the backlog has cleared
            return False
        if not self._backlog_logged:
            self._backlog_logged = True
            logger.warning("%d finished jobs are waiting to be downloaded and published; new jobs wait until "
                           "fewer do (raise output_workers in hotfolder.toml if the outputs cannot keep up)",
                           waiting)
        return True

    def _start_output_worker(self, server: str) -> None:
        """One more output worker for ``server`` (called with the lock held)."""
        self._output_threads[server] += 1
        self._output_serial += 1
        t = threading.Thread(target=self._output_worker, args=(server,), daemon=True,
                             name=f"output-worker-{server}-{self._output_serial}")
        self.core.threads.append(t)
        t.start()

    def _grow_outputs(self, server: str) -> None:
        """Start another output worker for ``server`` when its oldest finished job has waited for one
        longer than OUTPUT_WAIT (up to ``output_workers``): one keeps up with most servers, slow
        downloads or post-processors get more. Called with the lock held."""
        waiting = self._handoff[server]
        if (waiting and self._output_threads[server] < self.core.settings.output_workers
                and time.monotonic() - waiting[0].since > OUTPUT_WAIT):
            self._start_output_worker(server)

    def _watch_outputs(self) -> None:
        """Twice per OUTPUT_WAIT, start output workers where finished jobs have waited too long (the
        busy workers cannot notice: they are inside a download or a post-processor)."""
        while not self.core.stop.wait(OUTPUT_WAIT / 2):
            with self.core.cond:
                for server in self._handoff:
                    self._grow_outputs(server)

    def _output_worker(self, server: str) -> None:
        """Run the output side of the jobs whose prompt ended on ``server``. A worker beyond the first
        stops after OUTPUT_IDLE seconds without work."""
        core = self.core
        waiting, ready = self._handoff[server], self._outputs_ready[server]
        while True:
            with core.cond:
                idle_since = time.monotonic()
                while not waiting and not core.stop.is_set():
                    if self._output_threads[server] > 1 and time.monotonic() - idle_since > OUTPUT_IDLE:
                        self._output_threads[server] -= 1
                        core.threads.remove(threading.current_thread())
                        return
                    ready.wait(1.0)
                if core.stop.is_set():
                    return  # what is left stays recorded ("submitted"): the next start downloads it
                handed = waiting.pop(0)
                core.cond.notify_all()  # a worker may wait for room in the handoff
            try:
                self._output_side(handed)
            finally:
                with core.cond:
                    self.running -= 1
                    core.cond.notify_all()

    def drain(self, budget: float, tick: Callable[[], object] | None = None) -> bool:
        """Let the jobs in flight finish for up to ``budget`` seconds (calling ``tick`` about once a
        second; the caller has set ``draining``). True if none is left running."""
        core = self.core
        end = time.monotonic() + budget
        with core.cond:
            core.cond.notify_all()
            while self.running and time.monotonic() < end:
                core.cond.wait(min(1.0, max(0.0, end - time.monotonic())))
                if tick:
                    core.cond.release()
                    try:
                        tick()
                    finally:
                        core.cond.acquire()
            return not self.running
