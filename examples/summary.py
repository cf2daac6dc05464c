r"""The numbers of ``docs/examples.md``, rendered from the runs' JSON files (no PyTorch needed).

``python -m examples.summary`` prints the Markdown tables for ``docs/flow_moons.json`` and
``docs/vae_digits.json``; ``tests/test_examples.py`` checks that ``docs/examples.md`` shows
exactly these, so the numbers there are always those of the committed figures.

Example:
    >>> flow = {"test_nll": 0.5, "train_nll": 0.4, "gaussian_test_nll": 1.9,
    ...         "step_seconds_median": {"generated": 0.02, "hand-written": 0.02},
    ...         "block": "coupling", "blocks": 8, "steps": 10, "time_steps": 5,
    ...         "points": {"train": 3, "test": 1}, "dtype": "float64"}
    >>> print(flow_table(flow).splitlines()[2])
    | flow, 8 × `coupling` | **0.500** | 0.400 |
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["flow_table", "vae_tables", "render"]

ROOT = Path(__file__).resolve().parent.parent


def flow_table(flow: dict[str, Any]) -> str:
    """Test NLL beside the Gaussian baseline, and the median step times."""
    times = flow["step_seconds_median"]
    lines = [
        "| model | test NLL (nats per point) | train NLL |",
        "| --- | --: | --: |",
        f"| flow, {flow['blocks']} × `{flow['block']}` | **{flow['test_nll']:.3f}** | "
        f"{flow['train_nll']:.3f} |",
        f"| Gaussian fitted to the training set | {flow['gaussian_test_nll']:.3f} | — |",
        "",
        f"Median time of one training step ({flow['dtype']}, {flow['time_steps']} steps of each "
        "kind timed round-robin): generated kernels "
        f"{times['generated'] * 1e3:.1f} ms"
        + (f", hand-written layers {times['hand-written'] * 1e3:.1f} ms (ratio "
           f"{times['generated'] / times['hand-written']:.2f})." if "hand-written" in times
           else "."),
    ]
    return "\n".join(lines)


def vae_tables(vae: dict[str, Any]) -> str:
    """Held-out ELBO per mode, then each estimator's measured and closed-form variances."""
    latent = vae["latent"]
    lines = ["| KL gradient | held-out ELBO (nats per image) | collapsed dimensions |",
             "| --- | --: | --: |"]
    for mode, entry in vae["modes"].items():
        lines.append(f"| `{mode}` | **{entry['held_out_elbo']:.2f}** | "
                     f"{len(entry['collapsed_dims'])} of {latent} |")
    lines += ["", "| estimator | dimensions | Var d_mu, measured | Var d_mu, 2.4 | "
              "Var d_logvar, measured | Var d_logvar, 2.4 |",
              "| --- | --- | --: | --: | --: | --: |"]
    for mode, entry in vae["modes"].items():
        if "variance" not in entry:
            continue
        v = entry["variance"]
        for group in ("active", "collapsed", "all"):
            if group not in v["measured"]:
                continue
            count = len(entry[f"{group}_dims"]) if group != "all" else latent
            m, c = v["measured"][group], v["closed_form"][group]
            lines.append(f"| `{mode}` | {group} ({count}) | {m['mu']:.4g} | {c['mu']:.4g} | "
                         f"{m['logvar']:.4g} | {c['logvar']:.4g} |")
    return "\n".join(lines)


def render(docs: Path = ROOT / "docs") -> str:
    """Both tables, from ``docs/flow_moons.json`` and ``docs/vae_digits.json``."""
    flow = json.loads((docs / "flow_moons.json").read_text(encoding="utf-8"))
    vae = json.loads((docs / "vae_digits.json").read_text(encoding="utf-8"))
    return flow_table(flow) + "\n\n" + vae_tables(vae) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"))
