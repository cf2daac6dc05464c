r"""What both examples share: the command line, seeding, the device, the progress bar, output.

Example:
    >>> parser = command_line("python -m examples.demo", "A demo.", steps=10, out="docs")
    >>> args = parser.parse_args(["--steps", "3"])
    >>> args.steps, args.device, args.dtype, args.seed
    (3, 'cpu', 'float64', 0)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from derive.output import OutputError, output_target, write_output

__all__ = [
    "DTYPES", "MAX_SEED", "MAX_LR", "MAX_THREADS", "command_line", "out_dir", "out_files",
    "device_of", "set_threads", "seed", "progress", "write_bytes", "write_json",
    "save_figure", "write_results", "median_step_times", "batches", "positive_int",
    "positive_float", "at_least_two", "seed_value", "learning_rate", "thread_count",
]

#: The ``--dtype`` choices.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
#: The largest ``--seed``: scikit-learn's ``random_state`` takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1
#: The largest ``--lr``: a larger step sends Adam's parameters to infinity at once.
MAX_LR = 1.0
#: The largest ``--threads`` (PyTorch accepts far more, and then fails as it exits).
MAX_THREADS = 256


def _given(text: str) -> str:
    """``text`` as an error message quotes it: repr, and cut where it is long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {_given(text)}"
                                         ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {_given(text)}"
                                         ) from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def seed_value(text: str) -> int:
    """An argparse type: an integer from 0 to :data:`MAX_SEED`."""
    expected = f"expected an integer from 0 to {MAX_SEED}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}, got {_given(text)}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{expected}, got {_given(text)}")
    return value


def learning_rate(text: str) -> float:
    """An argparse type: a number in (0, :data:`MAX_LR`]."""
    value = positive_float(text)
    if value > MAX_LR:
        raise argparse.ArgumentTypeError(f"expected a learning rate > 0 and <= {MAX_LR:g}, "
                                         f"got {text}")
    return value


def thread_count(text: str) -> int:
    """An argparse type: an integer from 1 to :data:`MAX_THREADS`."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_THREADS}, "
                                         f"got {value}")
    return value


def at_least_two(text: str) -> int:
    """An argparse type: an integer >= 2."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {value}")
    return value


def command_line(prog: str, description: str, *, steps: int, out: str) -> argparse.ArgumentParser:
    """The arguments both examples take; each adds its own.

    Arguments:
        prog: the command, for ``--help``.
        description: what the example does, for ``--help``.
        steps: the default number of optimizer steps.
        out: the default output directory.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=steps,
                        help=f"optimizer steps (default {steps})")
    parser.add_argument("--out", type=Path, default=Path(out),
                        help=f"directory for the figure and the numbers (default {out}/); "
                             "created if missing; only the example's own files are written")
    parser.add_argument("--seed", type=seed_value, default=0,
                        help="seed of the data split, the initialization and the noise, from "
                             f"0 to {MAX_SEED}; the same seed gives the same numbers "
                             "(default 0)")
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu (default), or cuda where available")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64",
                        help="floating dtype of the model and the data (default float64)")
    parser.add_argument("--threads", type=thread_count, default=1,
                        help=f"PyTorch CPU threads, at most {MAX_THREADS} (default 1: these "
                             "models are small, and more threads mostly contend)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (the results are still printed)")
    return parser


def out_dir(parser: argparse.ArgumentParser, path: Path) -> Path:
    """``--out`` checked: a directory, or a path where one can be made (parser error, exit 2,
    where a file is in the way)."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                parser.error(f"--out: expected a directory, got {str(path)!r}, and "
                             f"{str(part)!r} is a file")
            break
    return path


def out_files(parser: argparse.ArgumentParser, path: Path, names: list[str]) -> list[Path]:
    """The files ``names`` in ``--out``, each checked as ``derive -o`` checks its path
    (:func:`derive.output.output_target`): a parser error (exit 2), before any training,
    where one is a folder, a read-only file, a FIFO or device, or cannot be created."""
    files = [path / name for name in names]
    for file in files:
        try:
            output_target(file)
        except OutputError as err:
            parser.error(f"--out: cannot write {err}")
    return files


def device_of(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """The device called ``name``; a parser error (exit 2) where it is unknown or absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device: expected cpu or cuda, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device: expected cpu, or cuda where available; got {name!r}, "
                     "but this PyTorch has no CUDA device")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device: expected cpu or cuda, got {name!r}")
    return device


def set_threads(count: int) -> None:
    """Use ``count`` PyTorch CPU threads."""
    torch.set_num_threads(count)


def seed(value: int) -> np.random.Generator:
    """Seed PyTorch (every device) and return a NumPy generator with the same seed."""
    torch.manual_seed(value)
    return np.random.default_rng(value)


def progress(steps: int, desc: str, quiet: bool) -> tqdm:
    """A tqdm bar over ``range(steps)``; set the loss with ``bar.set_postfix(loss=...)``."""
    return tqdm(range(steps), desc=desc, disable=quiet, dynamic_ncols=True, leave=False,
                mininterval=0.25)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as ``derive latex -o`` writes
    (:func:`derive.output.write_output`): atomically (a temporary file, then a rename),
    missing folders created, the mode of a file already there kept, a symlink written
    through, a hard-linked file rewritten in place (every link sees it); a read-only file,
    a folder, a FIFO or a device raises :class:`~derive.output.OutputError` (one line)."""
    write_output(path, data)


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON with sorted keys (byte-identical for equal values)."""
    write_bytes(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def save_figure(figure: Any, path: Path) -> None:
    """A matplotlib figure as PNG, written atomically, without a timestamp in its metadata."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    write_bytes(path, buffer.getvalue())


def write_results(prog: str, writes: dict[Path, Callable[[Path], None]]) -> int:
    """Run each ``write(path)``; 0, or 1 after one line on standard error naming the file
    that could not be written (a full disk, a path changed since it was checked)."""
    for path, write in writes.items():
        try:
            write(path)
        except OSError as err:
            reason = str(err) if isinstance(err, OutputError) else (
                f"{path}: {err.strerror or err}")
            print(f"{prog}: error: cannot write {reason}", file=sys.stderr)
            return 1
    return 0


def median_step_times(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step function, timed round-robin so that the drift of
    a shared machine lands on all of them alike (one warm-up call each first)."""
    names = list(steps)
    for name in names:
        steps[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def batches(n: int, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless minibatch indices: shuffled epochs of ``range(n)``, ``size`` at a time."""
    while True:
        order = rng.permutation(n)
        for start in range(0, n - size + 1, size):
            yield order[start:start + size]
