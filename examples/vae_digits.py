r"""A VAE on scikit-learn's digits, its KL term from ``generated/gaussian_kl_logvar.py``.

The encoder gives ``mu`` and ``logvar`` of a diagonal Gaussian ``q(z|x)`` (8 latent
dimensions by default); the decoder is Bernoulli on the binarized 8x8 digits (or Gaussian
on the grey levels). The objective is question 2's free energy, the ELBO
``E_q[log p(x|z)] - KL(q(z|x) || N(0, I))``, its first term estimated with one
reparameterized sample ``z = mu + exp(logvar / 2) * eps``. The KL term comes from the
generated kernels in one of the three ways question 2 derives (``--kl``):

- ``exact``: autograd through ``kl`` (derivation 2.3n's arrangement);
- ``reparam``: the single-sample estimator ``kl_grad_reparam`` (derivation 2.4);
- ``stl``: sticking the landing, ``kl_grad_stl`` (2.4 without the score term).

Run from the repository root::

    python -m examples.vae_digits                    # all three modes, 3,000 steps each
    python -m examples.vae_digits --kl stl --steps 500 --out /tmp/vae

It prints the held-out ELBO of each mode and the variance of each estimator's KL
gradient beside question 2.4's closed-form variances at the trained parameters, and writes
``vae_digits.png`` and ``vae_digits.json`` to ``--out``.

Example:
    >>> mu = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    >>> logvar = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    >>> kl_term(mu, logvar, torch.ones(3, 2, dtype=torch.float64), "stl").shape
    torch.Size([3])
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from examples import harness
from generated import gaussian_kl_logvar as gkl

__all__ = ["MODES", "COLLAPSED", "VAE", "kl_term", "digits", "closed_form_variances", "train",
           "main"]

#: The ``--kl`` modes: how the KL term's gradient is computed.
MODES = ("exact", "reparam", "stl")
_ESTIMATORS = {"reparam": gkl.kl_grad_reparam, "stl": gkl.kl_grad_stl}
#: A latent dimension is "collapsed" where its mean KL over the test set is below this
#: (nats): there q is (nearly) the prior, and sticking the landing's variance nearly zero.
COLLAPSED = 0.05


def kl_term(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor, mode: str) -> torch.Tensor:
    """KL(q || N(0, I)) per data point, summed over the latent dimensions, whose *value* is
    the exact KL and whose *gradient* with respect to ``mu`` and ``logvar`` is ``mode``'s.

    ``exact`` differentiates the generated ``kl`` by autograd. An estimator enters as a
    surrogate: ``kl + g_mu * (mu - mu.detach()) + g_logvar * (logvar - logvar.detach())``,
    with ``(g_mu, g_logvar)`` the generated estimate at ``eps`` (detached). The two added
    terms are zero in value and have gradient ``g``, so the loss printed keeps the exact
    KL while backpropagation carries the estimate into the encoder. We chose
    the surrogate over a custom ``torch.autograd.Function``: it is three lines, keeps
    autograd's own bookkeeping (devices, dtypes, ``torch.func``), and shows in one
    expression what the gradient is. ``eps`` should be the noise that drew ``z`` for the
    reconstruction term: then ``reparam`` is exactly the usual single-sample VAE gradient
    of ``log q(z) - log p(z)``, and ``stl`` is that gradient without the score term.

    Arguments:
        mu: the encoder's means, shape (..., latent).
        logvar: the encoder's log-variances, shape (..., latent).
        eps: the standard normal noise of the sample, broadcasting against ``mu``.
        mode: one of :data:`MODES`.
    """
    if mode == "exact":
        return gkl.kl(mu, logvar).sum(-1)
    if mode not in _ESTIMATORS:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    value = gkl.kl(mu.detach(), logvar.detach())
    g_mu, g_logvar = _ESTIMATORS[mode](mu.detach(), logvar.detach(), eps.detach())
    surrogate = g_mu * (mu - mu.detach()) + g_logvar * (logvar - logvar.detach())
    return (value + surrogate).sum(-1)


def digits(seed: int, binarize: bool) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1] (binarized at 0.5 if asked), split
    4:1 into train and test by a permutation drawn from ``seed``."""
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    if binarize:
        x = (x >= 0.5).astype(float)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = (4 * len(x)) // 5
    return x[order[:cut]], x[order[cut:]]


class VAE(nn.Module):
    """Encoder ``x -> (mu, logvar)`` and decoder ``z -> p(x|z)``, MLPs with two hidden layers.

    Arguments:
        pixels: the data dimension.
        latent: the latent dimension.
        width: the hidden width.
        decoder: ``bernoulli`` (logits) or ``gaussian`` (mean, and one learned log-variance
            per pixel).
    """

    def __init__(self, pixels: int = 64, latent: int = 8, width: int = 128,
                 decoder: str = "bernoulli") -> None:
        super().__init__()
        if decoder not in ("bernoulli", "gaussian"):
            raise ValueError(f"decoder: expected bernoulli or gaussian, got {decoder!r}")
        self.decoder_kind = decoder
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(pixels, width), nn.ReLU(),
                                     nn.Linear(width, width), nn.ReLU(),
                                     nn.Linear(width, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, width), nn.ReLU(),
                                     nn.Linear(width, width), nn.ReLU(),
                                     nn.Linear(width, pixels))
        self.pixel_logvar = nn.Parameter(torch.zeros(pixels)) if decoder == "gaussian" else None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z), summed over the pixels."""
        out = self.decoder(z)
        if self.decoder_kind == "bernoulli":
            return -nnf.binary_cross_entropy_with_logits(
                out, x.expand_as(out), reduction="none").sum(-1)
        return -nnf.gaussian_nll_loss(out, x.expand_as(out), self.pixel_logvar.exp().expand_as(
            out), full=True, reduction="none").sum(-1)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at ``z``."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.decoder_kind == "bernoulli" else out

    def elbo(self, x: torch.Tensor, eps: torch.Tensor, mode: str = "exact") -> torch.Tensor:
        """One-sample ELBO per data point; the KL term's gradient follows ``mode``."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.log_likelihood(x, z) - kl_term(mu, logvar, eps, mode)


def closed_form_variances() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Question 2.4's variances of the single-sample estimates, per dimension, as functions
    of ``(mu, logvar)``: taken from derivation 2.4 (variant ``logvar``), not typed in.

    Keys: ``reparam/mu``, ``reparam/logvar``, ``stl/mu``, ``stl/logvar``.
    """
    import sympy as sp

    from derive import build

    derivation = build("2.4", "logvar")
    out = {}
    for mode, prefix in (("reparam", "var_"), ("stl", "var_stl_")):
        for par in ("mu", "logvar"):
            expr = derivation.result(prefix + par)
            symbols = {s.name: s for s in expr.free_symbols}
            fn = sp.lambdify((symbols.get("mu", sp.Symbol("mu")),
                              symbols.get("logvar", sp.Symbol("logvar"))), expr, "numpy")
            out[f"{mode}/{par}"] = (
                lambda m, v, fn=fn: np.broadcast_to(fn(m, v), np.broadcast_shapes(
                    np.shape(m), np.shape(v))).astype(float))
    return out


def measured_variances(mu: torch.Tensor, logvar: torch.Tensor, mode: str, samples: int,
                       generator: torch.Generator) -> dict[str, np.ndarray]:
    """The variance over ``samples`` noise draws of ``mode``'s single-sample estimate, per
    data point and dimension: keys ``mu`` and ``logvar``, shape of ``mu``."""
    eps = torch.randn((samples, *mu.shape), generator=generator, dtype=mu.dtype,
                      device=mu.device)
    g_mu, g_logvar = _ESTIMATORS[mode](mu, logvar, eps)
    return {"mu": g_mu.var(0).cpu().numpy(), "logvar": g_logvar.var(0).cpu().numpy()}


@torch.no_grad()
def held_out_elbo(model: VAE, x: torch.Tensor, samples: int, seed: int) -> float:
    """Mean ELBO in nats per image over ``x``: the reconstruction term averaged over
    ``samples`` draws of fixed noise (``seed``), the KL term exact."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    mu, logvar = model.encode(x)
    eps = torch.randn((samples, *mu.shape), generator=generator, dtype=x.dtype,
                      device=x.device)
    z = mu + torch.exp(0.5 * logvar) * eps
    recon = model.log_likelihood(x, z).mean(0)
    return float((recon - gkl.kl(mu, logvar).sum(-1)).mean())


def train(model: VAE, train_x: torch.Tensor, test_x: torch.Tensor, mode: str, steps: int,
          batch: int, lr: float, seed: int, log_every: int, variance_samples: int,
          on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fit ``model`` by Adam on the negative one-sample ELBO, the KL gradient per ``mode``.

    Every ``log_every`` steps (and at the end) it records the held-out ELBO and, for the
    estimators, the variance of the KL gradient estimate at the encoder's current outputs
    on the test set, per latent dimension (mean over the points). Returns the curves and
    the losses.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = harness.batches(len(train_x), min(batch, len(train_x)),
                              np.random.default_rng(seed))
    generator = torch.Generator(device=train_x.device).manual_seed(seed)
    var_generator = torch.Generator(device=train_x.device).manual_seed(seed + 1)
    history: dict[str, Any] = {"step": [], "elbo": [], "var_mu": [], "var_logvar": [],
                               "losses": []}
    for step in range(steps + 1):
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["elbo"].append(held_out_elbo(model, test_x, 8, seed))
            if mode in _ESTIMATORS:
                with torch.no_grad():
                    mu, logvar = model.encode(test_x)
                    var = measured_variances(mu, logvar, mode, variance_samples, var_generator)
                for par in ("mu", "logvar"):
                    history["var_" + par].append([float(v) for v in var[par].mean(0)])
        if step == steps:
            break
        x = train_x[torch.from_numpy(next(batches)).to(train_x.device)]
        eps = torch.randn(x.shape[0], model.latent, generator=generator, dtype=x.dtype,
                          device=x.device)
        loss = -model.elbo(x, eps, mode).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history["losses"].append(loss.item())
        if on_step is not None:
            on_step(step, history["losses"][-1])
    return history


def _images(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of 8x8 images as one mosaic with one-pixel white gaps."""
    tiles = [np.concatenate([np.pad(im.reshape(8, 8), 1) for im in row], axis=1)
             for row in rows]
    return np.concatenate(tiles, axis=0)


def _figure(result: dict[str, Any], originals: np.ndarray, recons: dict[str, np.ndarray],
            samples: dict[str, np.ndarray], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(recons)
    fig, ax = plt.subplot_mosaic([["rec"] * 3 + ["smp"] * 3,
                                  ["elbo"] * 2 + ["mu"] * 2 + ["logvar"] * 2],
                                 figsize=(15, 8.5), height_ratios=[1, 1.3])
    ax["rec"].imshow(_images([originals] + [recons[m] for m in modes]), cmap="gray_r",
                     vmin=0, vmax=1)
    ax["rec"].set_yticks([5 + 10 * k for k in range(len(modes) + 1)],
                         ["test data"] + [f"recon., {m}" for m in modes])
    ax["rec"].set_xticks([])
    ax["rec"].set_title("held-out digits, reconstructed (decoder mean at z = mu)")
    ax["smp"].imshow(_images([samples[m] for m in modes]), cmap="gray_r", vmin=0, vmax=1)
    ax["smp"].set_yticks([5 + 10 * k for k in range(len(modes))], modes)
    ax["smp"].set_xticks([])
    ax["smp"].set_title("samples from the prior (decoder mean at z ~ N(0, I))")
    for k, m in enumerate(modes):
        h = result["modes"][m]["history"]
        ax["elbo"].plot(h["step"], h["elbo"], color=f"C{k}", label=m)
    tail = [v for m in modes for v in result["modes"][m]["history"]["elbo"][1:]]
    if tail:
        lo, hi = min(tail), max(tail)
        ax["elbo"].set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    ax["elbo"].set(title="held-out ELBO (nats per image)", xlabel="step")
    ax["elbo"].legend()
    for par in ("mu", "logvar"):
        a = ax[par]
        for k, m in enumerate(modes):
            entry = result["modes"][m]
            if "variance" not in entry:
                continue
            per_dim = np.array(entry["history"]["var_" + par])  # (logged steps, latent)
            closed = np.array(entry["variance"]["closed_form_per_dim"][par])
            for group, dims, style in (("active", entry["active_dims"], "-"),
                                       ("collapsed", entry["collapsed_dims"], ":")):
                if not dims:
                    continue
                a.plot(entry["history"]["step"], per_dim[:, dims].mean(1), ls=style,
                       color=f"C{k}", label=f"{m}, {group} dims ({len(dims)})")
                a.scatter([entry["history"]["step"][-1]], [closed[dims].mean()], marker="x",
                          s=60, color=f"C{k}", zorder=3)
        a.scatter([], [], marker="x", color="gray", label="question 2.4's closed form")
        a.set(title=f"Var of the KL gradient estimate for d {par}\n(mean over test points)",
              xlabel="step", yscale="log")
        a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


DESCRIPTION = __doc__.split("\n", 1)[0].replace("``", "") + """

Trains a VAE (Gaussian encoder, Bernoulli or Gaussian decoder) on scikit-learn's digits
once per KL mode (--kl: exact = autograd through generated kl; reparam = kl_grad_reparam;
stl = kl_grad_stl; all = the three, same seed and initialization). Prints the held-out
ELBO per mode and the variance of each estimator's KL gradient next to question 2.4's
closed-form variances at the trained parameters; writes vae_digits.png and
vae_digits.json to --out. A fixed --seed gives the same numbers. Run from the repository
root.
"""


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m examples.vae_digits --help``."""
    parser = harness.command_line("python -m examples.vae_digits", DESCRIPTION, steps=3000,
                                  out="docs")
    parser.add_argument("--kl", choices=(*MODES, "all"), default="all",
                        help="how the KL gradient is computed (default all: one run each)")
    parser.add_argument("--latent", type=harness.positive_int, default=8,
                        help="latent dimension (default 8)")
    parser.add_argument("--decoder", choices=("bernoulli", "gaussian"), default="bernoulli",
                        help="bernoulli on binarized digits (default) or gaussian on grey "
                             "levels")
    parser.add_argument("--batch", type=harness.positive_int, default=128,
                        help="minibatch size (default 128)")
    parser.add_argument("--lr", type=harness.learning_rate, default=1e-3,
                        help="Adam's learning rate, > 0 and <= 1 (default 1e-3)")
    parser.add_argument("--log-every", type=harness.positive_int, default=100,
                        help="steps between held-out ELBO and variance measurements "
                             "(default 100)")
    parser.add_argument("--variance-samples", type=harness.at_least_two, default=256,
                        help="noise draws per measurement of the estimators' variance "
                             "(default 256)")
    args = parser.parse_args(argv)
    device = harness.device_of(parser, args.device)
    harness.out_dir(parser, args.out)
    figure_path, json_path = harness.out_files(parser, args.out,
                                               ["vae_digits.png", "vae_digits.json"])
    harness.set_threads(args.threads)
    dtype = harness.DTYPES[args.dtype]
    modes = list(MODES) if args.kl == "all" else [args.kl]

    train_np, test_np = digits(args.seed, args.decoder == "bernoulli")
    train_x = torch.as_tensor(train_np, dtype=dtype, device=device)
    test_x = torch.as_tensor(test_np, dtype=dtype, device=device)
    closed_forms = closed_form_variances()
    result: dict[str, Any] = {
        "steps": args.steps, "seed": args.seed, "latent": args.latent,
        "decoder": args.decoder, "dtype": args.dtype, "device": str(device),
        "batch": args.batch, "lr": args.lr, "variance_samples": args.variance_samples,
        "points": {"train": len(train_np), "test": len(test_np)}, "modes": {},
    }
    recons, samples = {}, {}
    shown = test_x[:12]
    for mode in modes:
        torch.manual_seed(args.seed)  # the same initialization for every mode
        model = VAE(train_x.shape[1], args.latent, decoder=args.decoder).to(device, dtype)
        bar = harness.progress(args.steps, f"vae ({mode})", args.quiet)

        def on_step(step: int, loss: float, bar: Any = bar) -> None:
            bar.update(1)
            if step % 10 == 0 or step == args.steps - 1:
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        history = train(model, train_x, test_x, mode, args.steps, args.batch, args.lr,
                        args.seed, args.log_every, args.variance_samples, on_step)
        bar.close()
        entry: dict[str, Any] = {
            "held_out_elbo": held_out_elbo(model, test_x, 64, args.seed),
            "history": history,
        }
        with torch.no_grad():
            mu, logvar = model.encode(test_x)
            kl_per_dim = gkl.kl(mu, logvar).mean(0).cpu().numpy()
            entry["kl_per_dim"] = [float(v) for v in kl_per_dim]
            entry["collapsed_dims"] = [int(i) for i in np.flatnonzero(kl_per_dim < COLLAPSED)]
            entry["active_dims"] = [int(i) for i in np.flatnonzero(kl_per_dim >= COLLAPSED)]
            if mode in _ESTIMATORS:
                entry["variance"] = _variances_at(mu, logvar, mode, closed_forms, entry, args)
            recons[mode] = model.mean_image(mu[:12]).cpu().numpy()
            generator = torch.Generator(device=device).manual_seed(args.seed)
            z = torch.randn(12, args.latent, generator=generator, dtype=dtype, device=device)
            samples[mode] = model.mean_image(z).cpu().numpy()
        result["modes"][mode] = entry

    title = (f"VAE on digits, latent {args.latent}, {args.decoder} decoder, {args.steps} "
             "steps per KL mode; held-out ELBO " + ", ".join(
                 f"{m} {result['modes'][m]['held_out_elbo']:.2f}" for m in modes))
    figure = _figure(result, shown.cpu().numpy(), recons, samples, title)
    written = harness.write_results("python -m examples.vae_digits", {
        figure_path: lambda path: harness.save_figure(figure, path),
        json_path: lambda path: harness.write_json(path, result)})
    if written:
        return written

    print(f"VAE, latent {args.latent}, {args.decoder} decoder, {args.steps} steps per mode, "
          f"{args.dtype} on {device}")
    for mode in modes:
        entry = result["modes"][mode]
        h = entry["history"]
        print(f"  {mode:8s} held-out ELBO {entry['held_out_elbo']:.3f} nats per image "
              f"(training loss {h['losses'][0]:.2f} -> {h['losses'][-1]:.2f})")
        print(f"           {len(entry['collapsed_dims'])} of {args.latent} latent dimensions "
              f"collapsed (KL < {COLLAPSED} nats)")
        if mode in _ESTIMATORS:
            v = entry["variance"]
            for group in ("active", "collapsed", "all"):
                if group not in v["measured"]:
                    continue
                print(f"           Var of the KL gradient, {group} dims: d_mu "
                      f"{v['measured'][group]['mu']:.4g} (2.4: "
                      f"{v['closed_form'][group]['mu']:.4g}), d_logvar "
                      f"{v['measured'][group]['logvar']:.4g} (2.4: "
                      f"{v['closed_form'][group]['logvar']:.4g})")
    print(f"wrote {args.out / 'vae_digits.png'} and {args.out / 'vae_digits.json'}")
    return 0


def _variances_at(mu: torch.Tensor, logvar: torch.Tensor, mode: str,
                  closed_forms: dict[str, Callable], entry: dict[str, Any],
                  args: argparse.Namespace) -> dict[str, Any]:
    """Measured (Monte Carlo) and closed-form variances of ``mode``'s estimate at
    ``(mu, logvar)``: per dimension, and averaged over all, the active and the collapsed
    dimensions (each a mean over the points too)."""
    generator = torch.Generator(device=mu.device).manual_seed(args.seed + 2)
    mu_np, logvar_np = mu.cpu().numpy(), logvar.cpu().numpy()
    measured = {par: v.mean(0) for par, v in measured_variances(
        mu, logvar, mode, args.variance_samples, generator).items()}
    closed = {par: closed_forms[f"{mode}/{par}"](mu_np, logvar_np).mean(0) for par in measured}
    groups = {"all": list(range(mu.shape[-1])), "active": entry["active_dims"],
              "collapsed": entry["collapsed_dims"]}
    out: dict[str, Any] = {"measured": {}, "closed_form": {}}
    for name, values in (("measured", measured), ("closed_form", closed)):
        out[name + "_per_dim"] = {par: [float(x) for x in v] for par, v in values.items()}
        for group, dims in groups.items():
            if dims:
                out[name][group] = {par: float(v[dims].mean()) for par, v in values.items()}
    return out


if __name__ == "__main__":
    sys.exit(main())
