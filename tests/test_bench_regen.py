"""bench.regen.run_group: a timed-out child's forked workers die with it.

CI went red when ``bench --quick`` stopped a slow ``derive generate --check`` whose forked
workers kept writing into the benchmark's temporary cache folder while it was removed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.regen import run_group


def test_a_timeout_kills_the_forked_workers_too(tmp_path: Path) -> None:
    late = tmp_path / "written-after-the-timeout"
    script = textwrap.dedent(f"""
        import os, time
        if os.fork() == 0:          # a worker, as generate's pool forks them
            time.sleep(1.5)
            open({str(late)!r}, "w").write("late")
            os._exit(0)
        time.sleep(60)
    """)
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_group([sys.executable, "-c", script], timeout=0.5)
    assert time.monotonic() - start < 15
    time.sleep(2.0)
    assert not late.exists(), "a forked worker outlived the timeout and wrote its file"


def test_a_child_that_finishes_is_returned_as_subprocess_run_would() -> None:
    proc = run_group([sys.executable, "-c", "import sys; print('out'); "
                      "print('err', file=sys.stderr); sys.exit(3)"], timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
