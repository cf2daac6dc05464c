"""The training examples: smoke runs, the drop-in test of the flow, and the VAE's KL modes.

- Smoke: a few dozen steps of each example on ``tmp_path``; the loss falls and the figure
  and the numbers are written.
- Drop-in: a flow on ``generated/<block>.py`` and the same flow on the hand-written
  PyTorch layer (same seed, same initialization, same batches) give the same loss curve
  to float64 round-off, for every shipped block with a hand-written twin.
- KL modes: each mode's gradient (the surrogate of ``examples.vae_digits.kl_term``)
  agrees in expectation with the exact gradient, by Monte Carlo.

- ``docs/examples.md`` shows the numbers of the committed runs (``docs/*.json``).

All but the last skip, saying what is missing, where the ``examples`` extra is not
installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT

_MISSING = [m for m in ("torch", "sklearn", "matplotlib", "tqdm")
            if importlib.util.find_spec(m) is None]
needs_examples = pytest.mark.skipif(
    bool(_MISSING), reason=f"the examples need {', '.join(_MISSING)} "
                           "(pip install -e '.[examples]')")

if not _MISSING:
    import torch

    from derive.coursework.blocks import BLOCKS
    from examples import flow_moons, vae_digits
    from examples.handwritten_coupling import HANDWRITTEN
else:  # the parametrization below still needs the names
    from derive.coursework.blocks import BLOCKS

    HANDWRITTEN = {}


def _falls(values: list[float], window: int = 5) -> bool:
    return float(np.mean(values[-window:])) < float(np.mean(values[:window]))


# --- smoke runs ------------------------------------------------------------------------

@needs_examples
def test_flow_smoke(tmp_path, capsys):
    code = flow_moons.main(["--steps", "40", "--points", "600", "--blocks", "4",
                            "--time-steps", "3", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "flow_moons.json").read_text())
    assert (tmp_path / "flow_moons.png").stat().st_size > 10_000
    assert len(result["losses"]) == 40 and _falls(result["losses"])
    assert np.isfinite(result["test_nll"]) and np.isfinite(result["gaussian_test_nll"])
    assert set(result["step_seconds_median"]) == {"generated", "hand-written"}
    assert "test NLL" in capsys.readouterr().out


@needs_examples
def test_vae_smoke(tmp_path, capsys):
    code = vae_digits.main(["--steps", "30", "--log-every", "10", "--variance-samples", "16",
                            "--out", str(tmp_path), "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "vae_digits.json").read_text())
    assert (tmp_path / "vae_digits.png").stat().st_size > 10_000
    assert set(result["modes"]) == set(vae_digits.MODES)
    for mode, entry in result["modes"].items():
        history = entry["history"]
        assert _falls(history["losses"]), mode
        assert history["elbo"][-1] > history["elbo"][0], mode
        assert np.isfinite(entry["held_out_elbo"])
        if mode != "exact":
            assert entry["variance"]["measured"]["all"]["mu"] > 0
    assert "held-out ELBO" in capsys.readouterr().out


@needs_examples
def test_seed_reproduces_the_numbers(tmp_path):
    args = ["--steps", "5", "--points", "200", "--blocks", "2", "--time-steps", "1", "--quiet"]
    outs = []
    for k in range(2):
        flow_moons.main([*args, "--out", str(tmp_path / str(k))])
        result = json.loads((tmp_path / str(k) / "flow_moons.json").read_text())
        outs.append((result["losses"], result["test_nll"]))
    assert outs[0] == outs[1]


@needs_examples
@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--block", "no_such_block"], "--block"),
    (["--steps", "0"], "--steps"),
    (["--lr", "-1"], "--lr"),
    (["--out", str(ROOT / "README.md")], "--out"),
])
def test_command_line_errors_are_one_line(argv, message, capsys):
    if argv[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_:
        flow_moons.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


class _TrainingStarted(BaseException):
    """Raised where an example would start training: its checks came too late."""


@pytest.fixture
def no_training(monkeypatch):
    """Both examples' ``train`` replaced by one that fails the test at once (fast, even
    where the checks are missing)."""
    def refuse(*args, **kwargs):
        raise _TrainingStarted("training started before the options were checked")

    monkeypatch.setattr(flow_moons, "train", refuse)
    monkeypatch.setattr(vae_digits, "train", refuse)


_BAD_OPTIONS = [
    (["--seed", "-1"], "--seed"),
    (["--seed", "100000000000000000000000"], "--seed"),
    (["--seed", "4294967296"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    (["--lr", "1e10"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "-inf"], "--lr"),
    (["--batch", "0"], "--batch"),
    (["--batch", "-5"], "--batch"),
    (["--steps", "-1"], "--steps"),
    (["--threads", "1000000"], "--threads"),
]


@needs_examples
@pytest.mark.parametrize("example", ["flow_moons", "vae_digits"])
@pytest.mark.parametrize("argv, option", _BAD_OPTIONS)
def test_nonsensical_options_fail_before_training_in_one_line(example, argv, option,
                                                                      tmp_path, capsys,
                                                                      no_training):
    # Before: --seed -1 / 1e23 and --lr 1e10 ended in tracebacks (the last mid-training).
    module = {"flow_moons": flow_moons, "vae_digits": vae_digits}[example]
    with pytest.raises(SystemExit) as exit_:
        module.main([*argv, "--out", str(tmp_path), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and option in errors[0] and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@needs_examples
@pytest.mark.parametrize("example", ["flow_moons", "vae_digits"])
def test_an_output_file_that_is_a_folder_fails_before_training(example, tmp_path,
                                                                       capsys, no_training):
    # Before: the folder was found only after the whole training.
    (tmp_path / f"{example}.png").mkdir()
    module = {"flow_moons": flow_moons, "vae_digits": vae_digits}[example]
    with pytest.raises(SystemExit) as exit_:
        module.main(["--out", str(tmp_path), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--out" in err and f"{example}.png: Is a directory" in err, err


def _read_only(path):
    path.write_text("mine\n")
    path.chmod(0o444)


@needs_examples
@pytest.mark.parametrize("setup, why", [(_read_only, "read-only"), (os.mkfifo, "FIFO")],
                         ids=["read-only", "fifo"])
def test_an_unwritable_output_file_fails_before_training(tmp_path, capsys,
                                                                no_training, setup, why):
    setup(tmp_path / "flow_moons.json")
    with pytest.raises(SystemExit) as exit_:
        flow_moons.main(["--out", str(tmp_path), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "flow_moons.json" in err and why in err, err


@needs_examples
def test_a_missing_output_folder_is_fine_and_created(tmp_path, monkeypatch):
    # Checking the paths must not refuse a folder that does not exist yet.
    from examples import harness

    out = tmp_path / "new" / "deeper"
    parser = harness.command_line("demo", "demo", steps=1, out=str(out))
    assert harness.out_files(parser, out, ["a.png"]) == [out / "a.png"]
    harness.write_bytes(out / "a.png", b"png")
    assert (out / "a.png").read_bytes() == b"png"


@needs_examples
def test_write_bytes_keeps_symlinks_hard_links_and_read_only_files(tmp_path):
    # Before: a symlink was replaced by a file, a hard link broken, a 0444 file overwritten.
    from derive.output import OutputError
    from examples import harness

    real = tmp_path / "real.json"
    real.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    harness.write_bytes(link, b"new\n")
    assert link.is_symlink() and real.read_text() == "new\n"

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old\n")
    os.link(a, b)
    harness.write_bytes(a, b"new\n")
    assert b.read_text() == "new\n" and a.stat().st_nlink == 2

    frozen = tmp_path / "frozen.json"
    frozen.write_text("mine\n")
    frozen.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        harness.write_bytes(frozen, b"new\n")
    assert frozen.read_text() == "mine\n" and stat.S_IMODE(frozen.stat().st_mode) == 0o444


@needs_examples
def test_a_write_that_fails_after_training_is_one_line(tmp_path, capsys):
    # The paths are checked before training; one changed since is still one line, exit 1.
    from examples import harness

    (tmp_path / "gone").write_text("a file where the folder was\n")
    target = tmp_path / "gone" / "flow_moons.json"
    assert harness.write_results("demo", {target: lambda p: harness.write_bytes(p, b"x")}) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("demo: error: cannot write ") and (
        "Not a directory" in err), err


@needs_examples
def test_help_explains(capsys):
    # From the repository root, as docs/examples.md says; the VAE's in-process.
    run = subprocess.run([sys.executable, "-m", "examples.flow_moons", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    with pytest.raises(SystemExit) as exit_:
        vae_digits.main(["--help"])
    assert exit_.value.code == 0
    for text in (run.stdout, capsys.readouterr().out):
        for option in ("--steps", "--out", "--seed", "--device", "--dtype"):
            assert option in text
    assert "--block" in run.stdout and "coupling_affine" in run.stdout


# --- the drop-in test ------------------------------------------------------------------

@needs_examples
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_generated_blocks_drop_in_for_handwritten_layers(block):
    if block not in HANDWRITTEN:
        pytest.skip(f"no hand-written PyTorch layer for {block!r} in "
                    "examples/handwritten_coupling.py")
    data = torch.as_tensor(flow_moons.moons(512, seed=3), dtype=torch.float64)
    data = (data - data.mean(0)) / data.std(0)
    curves, samples = [], []
    for handwritten in (False, True):
        torch.manual_seed(7)
        flow = flow_moons.Flow(flow_moons.block_kernels(block, handwritten), blocks=4)
        flow = flow.to(torch.float64)
        curves.append(flow_moons.train(flow, data, steps=25, batch=128, lr=3e-3, seed=7))
        samples.append(flow.sample(64, torch.Generator().manual_seed(1)))
    generated, handwritten = np.array(curves[0]), np.array(curves[1])
    assert _falls(list(generated))
    # Round-off only: the two differ in the order of floating-point operations.
    np.testing.assert_allclose(generated, handwritten, rtol=1e-12, atol=0)
    torch.testing.assert_close(samples[0], samples[1], rtol=1e-10, atol=1e-12)


# --- the VAE's KL modes ----------------------------------------------------------------

def _grads(mode: str, mu0: torch.Tensor, logvar0: torch.Tensor, eps: torch.Tensor):
    """The gradient of kl_term with respect to ``mu`` and ``logvar`` (one row per row of a
    batch: rows do not interact), and its value."""
    mu = mu0.clone().requires_grad_(True)
    logvar = logvar0.clone().requires_grad_(True)
    value = vae_digits.kl_term(mu, logvar, eps, mode)
    value.sum().backward()
    return mu.grad, logvar.grad, value.detach()


@needs_examples
def test_exact_mode_is_the_generated_gradient():
    from generated import gaussian_kl_logvar as gkl

    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(6, generator=gen, dtype=torch.float64)
    logvar = 2 * torch.randn(6, generator=gen, dtype=torch.float64)
    d_mu, d_logvar, _ = _grads("exact", mu, logvar, torch.zeros(1, 6, dtype=torch.float64))
    want_mu, want_logvar = gkl.kl_grad(mu, logvar)
    torch.testing.assert_close(d_mu, want_mu, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d_logvar, want_logvar, rtol=1e-12, atol=1e-14)


@needs_examples
@pytest.mark.parametrize("mode", ["reparam", "stl"])
def test_estimator_modes_agree_with_the_exact_gradient_in_expectation(mode):
    """Tolerance: 5 Monte Carlo standard errors per component (each standard error from the
    sample variance of the 200,000 single-sample estimates), so a correct estimator fails
    with probability about 6e-7 per component, while an estimator biased by 1 % of the
    gradient (or by a dropped term of size one) fails."""
    from generated import gaussian_kl_logvar as gkl

    samples = 200_000
    gen = torch.Generator().manual_seed(1)
    # One dimension at the prior (STL's variance is zero there), the others around it.
    mu = torch.tensor([0.0, 0.7, -1.3, 0.2, 2.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -0.5, 0.4, -2.0, 0.1], dtype=torch.float64)
    eps = torch.randn(samples, 5, generator=gen, dtype=torch.float64)
    mu_b, logvar_b = mu.expand(samples, 5), logvar.expand(samples, 5)
    est_mu, est_logvar, value = _grads(mode, mu_b, logvar_b, eps)  # one estimate per row
    exact_mu, exact_logvar = _grads("exact", mu, logvar, torch.zeros(1, 5,
                                                                     dtype=torch.float64))[:2]
    # The surrogate's value is the exact KL, whatever the noise.
    torch.testing.assert_close(value, gkl.kl(mu, logvar).sum().expand(samples))
    for est, exact in ((est_mu, exact_mu), (est_logvar, exact_logvar)):
        mean = est.mean(0)
        stderr = est.std(0) / samples ** 0.5
        assert torch.all((mean - exact).abs() <= 5 * stderr + 1e-12), (mode, mean, exact,
                                                                         stderr)
        assert torch.all((mean - exact).abs() <= 0.02 * exact.abs() + 0.02)
    if mode == "stl":  # at the prior, sticking the landing is exact: zero variance
        assert float(est_mu[:, 0].abs().max()) < 1e-12
        assert float(est_logvar[:, 0].abs().max()) < 1e-12


# --- docs/examples.md ------------------------------------------------------------------

def test_the_examples_page_shows_the_committed_numbers():
    from examples import summary

    page = (ROOT / "docs" / "examples.md").read_text(encoding="utf-8")
    assert page.startswith("# Examples\n")
    for table in summary.render().strip().split("\n\n"):
        assert table in page, f"docs/examples.md lacks (python -m examples.summary):\n{table}"


@needs_examples
def test_flow_uses_forward_and_log_det_where_present():
    """A block module with ``forward_and_log_det`` is trained through it alone (``G``
    evaluated once per block); the loss curve is the one of the separate kernels."""
    from types import SimpleNamespace

    layer = HANDWRITTEN["coupling"]
    calls = []

    def combined(x1, x2, s, F, G):
        calls.append(1)
        return (*layer.forward(x1, x2, s, F, G), layer.log_det_jacobian(x1, x2, s, F, G))

    def refused(*args):
        raise AssertionError("forward/log_det_jacobian called although forward_and_log_det "
                             "exists")

    only_combined = SimpleNamespace(forward=refused, log_det_jacobian=refused,
                                    inverse=layer.inverse, forward_and_log_det=combined)
    data = torch.as_tensor(flow_moons.moons(256, seed=3), dtype=torch.float64)
    curves = []
    for kernels in (only_combined, layer):
        torch.manual_seed(7)
        flow = flow_moons.Flow(kernels, blocks=2).to(torch.float64)
        curves.append(flow_moons.train(flow, data, steps=5, batch=64, lr=3e-3, seed=7))
    assert curves[0] == curves[1] and len(calls) == 2 * 5
