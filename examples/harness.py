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
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "DTYPES", "command_line", "out_dir", "device_of", "set_threads", "seed", "progress",
    "write_bytes", "write_json", "save_figure", "median_step_times", "batches",
    "positive_int", "positive_float", "at_least_two",
]

#: The ``--dtype`` choices.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
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
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data split, the initialization and the noise; the "
                             "same seed gives the same numbers (default 0)")
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu (default), or cuda where available")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64",
                        help="floating dtype of the model and the data (default float64)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="PyTorch CPU threads (default 1: these models are small, and "
                             "more threads mostly contend)")
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
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename), keeping the
    mode of a file already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON with sorted keys (byte-identical for equal values)."""
    write_bytes(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def save_figure(figure: Any, path: Path) -> None:
    """A matplotlib figure as PNG, written atomically, without a timestamp in its metadata."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    write_bytes(path, buffer.getvalue())


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
