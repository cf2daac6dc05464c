r"""Marking untrusted answers in a child process with CPU, memory and wall-clock limits.

The child is forked after the references are derived (they are trusted and shared), caps
the growth of its address space (``RLIMIT_AS``, 1 GiB beyond what it inherited) and its
CPU time (``RLIMIT_CPU``, per answer), reads and decides, and sends back plain data. The
parent waits at most the wall-clock limit (15 s) per answer and kills the child by its
pid when it is exceeded; an answer that breaks a limit is reported ``undecided`` (exit 2)
with a message, and a fresh child takes the remaining answers. The child writes nothing
and reads no file.

Example:
    >>> answers = [("2.3", r"\frac12(\mu^2+\sigma^2-1)-\log\sigma", None),
    ...            ("2.3", r"10^{10^{10}}", None)]
    >>> [r["verdict"] for r in mark_batch(answers)]
    ['correct', 'unreadable']
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Limits", "LIMITS", "mark_batch", "mark_one"]


@dataclass(frozen=True)
class Limits:
    """Per-answer limits: wall clock and CPU seconds, and the child's address space."""

    wall_seconds: float = 15.0
    cpu_seconds: int = 15
    memory_bytes: int = 1 << 30


LIMITS = Limits()

Task = tuple[str, str, "str | None"]


def _report(verdict: str, message: str) -> dict:
    return {"verdict": verdict, "read_as": "", "feedback": [message], "steps": [], "parts": {}}


def _address_space() -> int:
    """The bytes of address space this process holds now (0 where /proc cannot tell)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _cap_memory(limit: int) -> None:
    # The cap is on growth: a parent that has loaded large libraries (PyTorch, JAX, in a
    # test session) hands the child gigabytes of mapped but idle address space.
    limit += _address_space()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _cap_cpu(seconds: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _serve(conn, tasks: Sequence[Task], specs: dict, limits: Limits) -> None:
    """The child: mark each task and send its report, under the limits."""
    from .marking import mark

    _cap_memory(limits.memory_bytes)
    for qid, text, variant in tasks:
        _cap_cpu(limits.cpu_seconds)
        try:
            report = mark(qid, text, variant, spec=specs[(qid, variant)]).as_dict()
        except MemoryError:
            report = _report("undecided", "the decision ran out of memory "
                             f"({limits.memory_bytes >> 20} MiB) and was stopped")
        except RecursionError:
            report = _report("unreadable", "the answer nests too deeply to read")
        except Exception as err:  # noqa: BLE001 - any failure is reported, never raised
            report = _report("undecided", f"the decision failed ({type(err).__name__})")
        conn.send(report)
    conn.close()


def mark_batch(tasks: Sequence[Task], limits: Limits = LIMITS,
               times: list[float] | None = None) -> list[dict]:
    """Mark ``(qid, text, variant)`` tasks in sandboxed children; one report per task.

    ``times``, where given, receives the wall-clock seconds each report took (from the
    previous report, or from the child's start).

    Raises ``KeyError`` or ``LookupError`` for an unsupported question or variant (before
    any child starts).
    """
    from .quantities import question_spec

    specs = {}
    for qid, _text, variant in tasks:
        if (qid, variant) not in specs:
            specs[(qid, variant)] = question_spec(qid, variant)
    context = multiprocessing.get_context("fork")
    reports: list[dict] = []
    while len(reports) < len(tasks):
        rest = list(tasks[len(reports):])
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_serve, args=(send, rest, specs, limits), daemon=True)
        child.start()
        send.close()
        try:
            for _ in rest:
                start = time.monotonic()
                if not receive.poll(limits.wall_seconds):
                    reports.append(_report(
                        "undecided", f"the decision took longer than {limits.wall_seconds:g} s "
                                     "and was stopped"))
                    break
                try:
                    reports.append(receive.recv())
                    if times is not None:
                        times.append(time.monotonic() - start)
                except EOFError:
                    reports.append(_report("undecided", _death(child, limits, start)))
                    break
        finally:
            if child.is_alive():
                os.kill(child.pid, 9)  # our own child, by its pid
            child.join()
            receive.close()
    return reports


def _death(child, limits: Limits, start: float) -> str:
    child.join(1)
    code = child.exitcode
    if code is not None and code < 0 and -code in (24, 9):  # SIGXCPU, SIGKILL
        return f"the decision exceeded the CPU limit ({limits.cpu_seconds} s) and was stopped"
    return (f"the decision stopped after {time.monotonic() - start:.1f} s without an answer "
            f"(exit status {code}; memory is capped at {limits.memory_bytes >> 20} MiB)")


def mark_one(qid: str, text: str, variant: str | None = None,
             limits: Limits = LIMITS) -> dict:
    """Mark one answer in a sandboxed child (see :func:`mark_batch`)."""
    return mark_batch([(qid, text, variant)], limits)[0]
