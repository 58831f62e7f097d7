"""Small task-side helpers: errors, fault exits, memory measurement, the task's host."""

from __future__ import annotations

import os
import resource

ERROR_TAG = "jampi-cannon:"


class CannonTaskError(RuntimeError):
    """A Cannon task failed; the message names the task and, where one is involved, the peer."""

    def __init__(self, message: str):
        super().__init__(f"{ERROR_TAG} {message}" if not message.startswith(ERROR_TAG) else message)


def fault_exit() -> None:
    """Fault injection: die the way a crashed executor process dies."""
    os._exit(1)


def fault_stop() -> None:
    """Fault injection: freeze the way a stopped worker or a hung machine does."""
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)


def trim_heap() -> None:
    """Give freed heap memory back to the OS (a reused worker keeps what earlier tasks freed)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Restart the kernel's high-water mark of this process (reused Python workers carry old peaks)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss() -> float:
    """Peak resident set size of this process in bytes (since the last reset, on Linux)."""
    value = _status_kib("VmHWM")
    if value is None:
        value = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return value


def current_rss() -> float:
    value = _status_kib("VmRSS")
    return float("nan") if value is None else value


def task_host(ctx, t: int) -> str:
    """The host this task listens on: SPARK_LOCAL_IP (what Spark binds to on this
    executor), else the executor address in the task context, else loopback."""
    env = os.environ.get("SPARK_LOCAL_IP", "").strip()
    if env and env not in ("0.0.0.0", "::", "[::]"):  # a wildcard is no address a peer can dial
        return env
    try:
        address = ctx.getTaskInfos()[t].address
        host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
        if host:
            return host
    except Exception:  # noqa: BLE001 - fall back below
        pass
    return "127.0.0.1"
