"""Comparison 9: how long ``derive check`` takes to mark one answer, in a batch.

The answer corpus of the tests (``tests/answers/*.answers``, every ``stride``-th answer)
is marked in one batch, as ``derive check`` marks a folder: one sandboxed child marks the
answers in turn (:func:`derive.check.sandbox.mark_batch`). The row reports the median and
the largest time per answer. The target (issue 12): a median of at most 1 s per answer on
a quiet 2-core machine. This was a timed test (``tests/test_check_files.py``); speed is
measured here, not asserted in the suite.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["run", "markdown"]


def run(stride: int, log: Callable[[str], None] = print) -> dict[str, object]:
    """Mark every ``stride``-th answer of the corpus in one batch; the times per answer."""
    from derive.check.sandbox import mark_batch
    from tests.answer_corpus import corpus_files, read_corpus

    answers = [a for p in corpus_files() for a in read_corpus(p)][::stride]
    times: list[float] = []
    start = time.perf_counter()
    mark_batch([(a.qid, a.latex, a.variant) for a in answers], times=times)
    row = {"answers": len(answers), "total": time.perf_counter() - start,
           "median": statistics.median(times), "max": max(times)}
    log(f"  derive check, {row['answers']} answers in one batch: median "
        f"{row['median'] * 1e3:.0f} ms per answer, largest {row['max']:.2f} s")
    return row


def markdown(row: dict[str, object] | None) -> list[str]:
    """The section of ``benchmarks.md`` for comparison 9."""
    if not row:
        return []
    return ["", "## 9. Marking: time per answer in a batch", "",
            f"The tests' answer corpus (every answer of a stride; {row['answers']} answers) "
            "marked in one batch by one sandboxed child, as `derive check` marks a folder. "
            "Target: a median of at most 1 s per answer on a quiet 2-core machine.", "",
            "| answers | median per answer | largest | whole batch |",
            "|---:|---:|---:|---:|",
            f"| {row['answers']} | {row['median'] * 1e3:.0f} ms | {row['max']:.2f} s | "
            f"{row['total']:.1f} s |"]
