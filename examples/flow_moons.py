r"""A RealNVP-style normalizing flow on two moons, its coupling blocks from ``generated/``.

The flow maps data ``x`` to ``z`` through ``K`` coupling blocks, alternating which half of
``x`` the block transforms; ``F`` and ``G`` of each block are small MLPs (two hidden layers
of 64). Its log-likelihood is the standard-normal log-density of ``z`` plus the summed
``log_det_jacobian`` of the blocks (``forward_and_log_det`` where the block module has
it, so ``G`` is evaluated once); sampling runs ``inverse`` block by block, last to first.
Only the generated kernels touch the block's formulas: the same model built on the
hand-written layers of :mod:`examples.handwritten_coupling` trains to the same loss curve
(``tests/test_examples.py``).

Run from the repository root::

    python -m examples.flow_moons                       # 2,000 steps, the question's block
    python -m examples.flow_moons --block coupling_affine --steps 500 --out /tmp/flow

It prints the test NLL beside a fitted Gaussian's, the median time of a training step with
the generated and the hand-written layers, and writes ``flow_moons.png`` (data, samples,
learned density) and ``flow_moons.json`` (every number) to ``--out``.

Example:
    >>> flow = Flow(block_kernels("coupling"), dim=2, blocks=2)
    >>> x = torch.zeros(5, 2, dtype=torch.float64)
    >>> flow.to(torch.float64).log_prob(x).shape
    torch.Size([5])
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from derive.coursework.blocks import BLOCKS, QUESTION_BLOCK
from examples import harness
from examples.handwritten_coupling import HANDWRITTEN

__all__ = ["Flow", "block_kernels", "moons", "gaussian_nll", "train", "main"]

_LOG_2PI = math.log(2 * math.pi)


def block_kernels(block: str, handwritten: bool = False) -> ModuleType | SimpleNamespace:
    """The kernels of ``block``: ``generated/<block>.py``, or its hand-written twin.

    Raises KeyError naming the known blocks (or the blocks with a hand-written twin).
    """
    if block not in BLOCKS:
        raise KeyError(f"block: expected one of {', '.join(sorted(BLOCKS))}, got {block!r}")
    if handwritten:
        if block not in HANDWRITTEN:
            raise KeyError(f"block: no hand-written layer for {block!r}; there are for "
                           f"{', '.join(sorted(HANDWRITTEN))}")
        return HANDWRITTEN[block]
    return importlib.import_module(f"generated.{block}")


def _mlp(n: int, width: int) -> nn.Sequential:
    """n -> width -> width -> n with tanh; the last layer starts at zero, so every block
    starts as (close to) the identity and the flow as the standard normal."""
    net = nn.Sequential(nn.Linear(n, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                        nn.Linear(width, n))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class Flow(nn.Module):
    """``blocks`` coupling blocks of one kind; block ``k`` transforms the first half of its
    input where ``k`` is even and the second half where ``k`` is odd.

    Arguments:
        kernels: a block's kernels: ``forward``, ``inverse``, ``log_det_jacobian``, and
            optionally ``forward_and_log_det`` (used where present).
        dim: the data dimension (even).
        blocks: the number of coupling blocks ``K``.
        width: the hidden width of F and G.
    """

    def __init__(self, kernels: Any, dim: int = 2, blocks: int = 8, width: int = 64) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim: expected an even dimension, got {dim}")
        self.kernels = kernels
        self.n = dim // 2
        self.F = nn.ModuleList(_mlp(self.n, width) for _ in range(blocks))
        self.G = nn.ModuleList(_mlp(self.n, width) for _ in range(blocks))
        self.s = nn.Parameter(torch.zeros(blocks, self.n))

    def _split(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[..., :self.n], x[..., self.n:]
        return (a, b) if k % 2 == 0 else (b, a)

    @staticmethod
    def _join(k: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat((a, b) if k % 2 == 0 else (b, a), dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` and the summed log-determinant of the blocks, shape ``(...,)``."""
        combined = getattr(self.kernels, "forward_and_log_det", None)
        log_det = x.new_zeros(x.shape[:-1])
        for k in range(len(self.F)):
            x1, x2 = self._split(k, x)
            F, G, s = self.F[k], self.G[k], self.s[k]
            if combined is not None:
                y1, y2, ld = combined(x1, x2, s, F, G)
            else:
                y1, y2 = self.kernels.forward(x1, x2, s, F, G)
                ld = self.kernels.log_det_jacobian(x1, x2, s, F, G)
            x = self._join(k, y1, y2)
            log_det = log_det + ld
        return x, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x): the standard-normal log-density of z plus the summed log-determinants."""
        z, log_det = self(x)
        return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI + log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """x from z: ``inverse`` block by block, last to first."""
        for k in reversed(range(len(self.F))):
            y1, y2 = self._split(k, z)
            x1, x2 = self.kernels.inverse(y1, y2, self.s[k], self.F[k], self.G[k])
            z = self._join(k, x1, x2)
        return z

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` samples: standard normal z through :meth:`inverse`."""
        param = self.s
        z = torch.randn(count, 2 * self.n, generator=generator, dtype=param.dtype,
                        device=param.device)
        return self.inverse(z)


def moons(count: int, seed: int) -> np.ndarray:
    """``count`` points of two moons with noise 0.05 (scikit-learn), shape (count, 2)."""
    from sklearn.datasets import make_moons

    return make_moons(n_samples=count, noise=0.05, random_state=seed)[0]


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Mean NLL in nats of ``test`` under the Gaussian fitted to ``train`` (maximum
    likelihood mean and covariance): the baseline a flow has to beat."""
    mean = train.mean(0)
    cov = np.cov(train, rowvar=False, bias=True)
    diff = test - mean
    maha = np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
    logdet = np.linalg.slogdet(cov)[1]
    return float(np.mean(0.5 * (maha + logdet + train.shape[1] * _LOG_2PI)))


def train(flow: Flow, data: torch.Tensor, steps: int, batch: int, lr: float, seed: int,
          on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit ``flow`` to ``data`` by Adam on the mean NLL; return the loss of every step.

    The minibatches come from ``seed`` alone, so two flows trained with the same seed see
    the same batches in the same order.
    """
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    batches = harness.batches(len(data), min(batch, len(data)), np.random.default_rng(seed))
    losses = []
    for step in range(steps):
        index = torch.from_numpy(next(batches)).to(data.device)
        loss = -flow.log_prob(data[index]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def _timed_steps(block: str, data: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per training step with the generated and the hand-written layers
    (same model, same batch; timed round-robin)."""
    kinds = {"generated": False}
    if block in HANDWRITTEN:
        kinds["hand-written"] = True
    steps = {}
    index = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(data))[
        :args.batch]).to(data.device)
    for label, handwritten in kinds.items():
        torch.manual_seed(args.seed)
        flow = Flow(block_kernels(block, handwritten), blocks=args.blocks).to(
            device=data.device, dtype=data.dtype)
        optimizer = torch.optim.Adam(flow.parameters(), lr=args.lr)

        def step(flow: Flow = flow, optimizer: torch.optim.Optimizer = optimizer) -> None:
            loss = -flow.log_prob(data[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if data.device.type == "cuda":
                torch.cuda.synchronize()

        steps[label] = step
    return harness.median_step_times(steps, repeats=args.time_steps)


def _figure(test: np.ndarray, samples: np.ndarray, losses: list[float],
            log_prob: Callable[[np.ndarray], np.ndarray], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    lo, hi = test.min(0) - 0.4, test.max(0) + 0.4
    box = dict(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), aspect="equal")
    axes[0].scatter(test[:, 0], test[:, 1], s=3, alpha=0.5)
    axes[0].set(title="test data", **box)
    axes[1].scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, color="C1")
    axes[1].set(title="samples from the flow (inverse)", **box)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    density = np.exp(log_prob(grid)).reshape(gx.shape)
    axes[2].imshow(density, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]),
                   cmap="viridis")
    axes[2].set(title="learned density", **box)
    axes[3].plot(np.arange(1, len(losses) + 1), losses, lw=0.6)
    axes[3].set(title="training loss (minibatch NLL, nats per point)", xlabel="step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


DESCRIPTION = __doc__.split("\n", 1)[0].replace("``", "") + """

Trains K coupling blocks (generated/<block>.py) on two moons (noise 0.05) by Adam on the
mean negative log-likelihood; prints the test NLL in nats beside a fitted Gaussian's and
the median per-step time with generated vs hand-written layers; writes flow_moons.png
(data, samples, density) and flow_moons.json (the numbers) to --out.
A fixed --seed gives the same numbers. Run from the repository root.
"""


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m examples.flow_moons --help``."""
    parser = harness.command_line("python -m examples.flow_moons", DESCRIPTION, steps=2000,
                                  out="docs")
    parser.add_argument("--block", choices=sorted(BLOCKS), default=QUESTION_BLOCK,
                        help=f"the coupling block, from derive.coursework.blocks.BLOCKS (default "
                             f"{QUESTION_BLOCK})")
    parser.add_argument("--blocks", type=harness.positive_int, default=8,
                        help="number K of coupling blocks (default 8)")
    parser.add_argument("--batch", type=harness.positive_int, default=256,
                        help="minibatch size (default 256)")
    parser.add_argument("--lr", type=harness.learning_rate, default=3e-3,
                        help="Adam's learning rate, > 0 and <= 1, cosine-annealed to 0 "
                             "(default 3e-3)")
    parser.add_argument("--points", type=harness.positive_int, default=4000,
                        help="points drawn, three quarters for training (default 4000)")
    parser.add_argument("--handwritten", action="store_true",
                        help="train on the hand-written PyTorch layers instead of the generated "
                             "kernels (for comparison)")
    parser.add_argument("--time-steps", type=harness.positive_int, default=40,
                        help="steps timed per kind of layer for the per-step time (default 40)")
    args = parser.parse_args(argv)
    device = harness.device_of(parser, args.device)
    harness.out_dir(parser, args.out)
    figure_path, json_path = harness.out_files(parser, args.out,
                                               ["flow_moons.png", "flow_moons.json"])
    harness.set_threads(args.threads)
    dtype = harness.DTYPES[args.dtype]
    if args.points < 8:
        parser.error(f"--points: expected at least 8, got {args.points}")

    harness.seed(args.seed)
    points = moons(args.points, args.seed)
    cut = (3 * len(points)) // 4
    train_np, test_np = points[:cut], points[cut:]
    mean, std = train_np.mean(0), train_np.std(0)
    log_scale = float(np.log(std).sum())  # NLL in data units = NLL standardized + this
    as_tensor = lambda a: torch.as_tensor((a - mean) / std, dtype=dtype, device=device)  # noqa: E731
    train_x, test_x = as_tensor(train_np), as_tensor(test_np)

    torch.manual_seed(args.seed)
    flow = Flow(block_kernels(args.block, args.handwritten), blocks=args.blocks).to(
        device=device, dtype=dtype)
    bar = harness.progress(args.steps, f"flow ({args.block})", args.quiet)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 10 == 0 or step == args.steps - 1:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    losses = train(flow, train_x, args.steps, args.batch, args.lr, args.seed, on_step)
    bar.close()

    with torch.no_grad():
        test_nll = float(-flow.log_prob(test_x).mean()) + log_scale
        train_nll = float(-flow.log_prob(train_x).mean()) + log_scale
    baseline = gaussian_nll(train_np, test_np)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = flow.sample(len(test_np), generator).cpu().numpy() * std + mean

    def log_prob(grid: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return flow.log_prob(as_tensor(grid)).cpu().numpy() - log_scale

    times = _timed_steps(args.block, train_x, args)
    kind = "hand-written layers" if args.handwritten else "generated kernels"
    result = {
        "block": args.block, "layers": kind, "blocks": args.blocks, "steps": args.steps,
        "seed": args.seed,
        "dtype": args.dtype, "device": str(device), "batch": args.batch, "lr": args.lr,
        "points": {"train": len(train_np), "test": len(test_np)},
        "kernels": "forward_and_log_det" if hasattr(flow.kernels, "forward_and_log_det")
        else "forward + log_det_jacobian",
        "test_nll": test_nll, "train_nll": train_nll, "gaussian_test_nll": baseline,
        "step_seconds_median": times, "time_steps": args.time_steps,
        "losses": [v + log_scale for v in losses],
    }
    title = (f"RealNVP-style flow, {args.blocks} x {args.block} ({kind}), "
             f"{args.steps} steps: test NLL {test_nll:.3f} nats (Gaussian {baseline:.3f})")
    figure = _figure(test_np, samples, [v + log_scale for v in losses], log_prob, title)
    written = harness.write_results("python -m examples.flow_moons", {
        figure_path: lambda path: harness.save_figure(figure, path),
        json_path: lambda path: harness.write_json(path, result)})
    if written:
        return written

    print(f"block {args.block} x {args.blocks}, {args.steps} steps, {args.dtype} on {device}")
    print(f"test NLL {test_nll:.4f} nats per point (train {train_nll:.4f}); "
          f"fitted Gaussian {baseline:.4f}")
    timing = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in times.items())
    ratio = (f" (ratio {times['generated'] / times['hand-written']:.2f})"
             if "hand-written" in times else " (no hand-written layer for this block)")
    print(f"median step time: {timing}{ratio}")
    print(f"wrote {args.out / 'flow_moons.png'} and {args.out / 'flow_moons.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
