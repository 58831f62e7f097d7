"""A bound on the tail of a barrier stage.

Spark waits for every task of a barrier stage with no limit of its own. A task
whose Python worker is stopped (SIGSTOP, a frozen machine) after its exchange
is over never finishes, and its peers, done, cannot notice. The watchdog polls
the stage's progress from the driver: once some of its tasks have finished,
the others must finish within the configured timeout, or the job is cancelled
(and the stage retried, or the product fails naming the cause).
"""

from __future__ import annotations

import threading
import time


class StageWatchdog:
    def __init__(self, sc, group: str, tasks: int, timeout: float, poll: float = 0.25):
        self.sc, self.group, self.tasks, self.timeout, self.poll = sc, group, tasks, timeout, poll
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"jampi-watchdog-{group}", daemon=True)

    def __enter__(self) -> StageWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _completed(self) -> int | None:
        tracker = self.sc.statusTracker()
        done = None
        for job in tracker.getJobIdsForGroup(self.group):
            info = tracker.getJobInfo(job)
            for stage in info.stageIds if info is not None else ():
                stage_info = tracker.getStageInfo(stage)
                if stage_info is not None:
                    done = max(done or 0, stage_info.numCompletedTasks)
        return done

    def _watch(self) -> None:
        first_done_at = None
        while not self._stop.wait(self.poll):
            try:
                done = self._completed()
            except Exception:  # noqa: BLE001 - a context going down: nothing left to watch
                return
            if not done or done >= self.tasks:
                continue
            if first_done_at is None:
                first_done_at = time.monotonic()
            elif time.monotonic() - first_done_at > self.timeout:
                missing = self.tasks - done
                self.reason = (f"{missing} of {self.tasks} tasks still running {self.timeout:g}s after the "
                               "others finished (a stopped or lost worker)")
                self.sc.cancelJobGroup(self.group)
                return
