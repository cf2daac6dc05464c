"""Draw docs/architecture.png: the layers (left) and the data flow of `derive generate` (right).

Run from the repository root with matplotlib installed (the bench or examples extra):

    python docs/architecture_figure.py

The picture is plain boxes and arrows; docs/architecture.md explains each box.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "architecture.png"

LAYER = "#dbe8f6"
FLOW = "#fdf0d5"
FILE = "#e3f2df"
RUNTIME = "#eeeeee"


def box(ax, x, y, w, h, title, body="", color=LAYER, size=9.5):
    """A rounded box at (x, y) (lower left) with a bold title and a smaller body."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01,rounding_size=0.012",
                                facecolor=color, edgecolor="#444444", linewidth=1.0))
    if body:
        ax.text(x + w / 2, y + h * 0.68, title, ha="center", va="center", fontsize=size,
                fontweight="bold")
        ax.text(x + w / 2, y + h * 0.30, body, ha="center", va="center", fontsize=size - 1.8,
                family="monospace", linespacing=1.25)
    else:
        ax.text(x + w / 2, y + h / 2, title, ha="center", va="center", fontsize=size,
                fontweight="bold")


def arrow(ax, start, end, label="", style="-|>", color="#333333", rad=0.0, dashed=False):
    """An arrow from ``start`` to ``end`` with an optional label at its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=13,
                                 color=color, linewidth=1.2,
                                 linestyle="--" if dashed else "-",
                                 connectionstyle=f"arc3,rad={rad}"))
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx + 0.008, my, label, fontsize=7.5, ha="left", va="center", color="#333333",
                style="italic")


def layers(ax):
    """The layers of tests/test_layers.py, bottom to top; imports point downward only."""
    ax.text(0.21, 0.975, "Layers (imports point down only)", ha="center", fontsize=12,
            fontweight="bold")
    x, w, h, gap = 0.02, 0.38, 0.105, 0.035
    rows = [
        ("cli", "derive/cli.py  files.py\noutput.py  pdf.py"),
        (None, None),  # the level of three layers, drawn below
        ("material", "blocks.py  gaussian_kl.py  free_energy.py\nkernels.py  questions.py"),
        ("derivation and step checking", "derivation.py  arrangement.py\nspec.py  coupling.py"),
        ("neutral symbols and nodes", "nodes.py  vocabulary.py\nprobability.py  pieces.py"),
    ]
    tops = []
    y = 0.93
    for title, body in rows:
        y -= h
        tops.append(y)
        if title is None:
            sep = 0.028
            third = (w - 2 * sep) / 3
            box(ax, x, y, third, h, "typesetting", "text.py\ndocument.py\nnotebook.py\n"
                "codegen/latex.py", size=8.5)
            box(ax, x + third + sep, y, third, h, "codegen", "codegen/*\nplan, backends\n"
                "printers\ntemplates", size=8.5)
            box(ax, x + 2 * (third + sep), y, third, h, "checking", "derive/check/*\n"
                "reader, marking\nsandbox", size=8.5)
        else:
            box(ax, x, y, w, h, title, body)
        y -= gap
    for lower in tops[1:]:
        arrow(ax, (x + w / 2, lower + h + gap - 0.004), (x + w / 2, lower + h + 0.004))
    # the separate runtime, beside nothing: generated/ imports kernel_runtime only
    y = tops[-1] - gap - 0.1
    box(ax, x, y, 0.17, 0.085, "generated/", "generated code", color=FILE, size=9)
    box(ax, x + 0.21, y, 0.17, 0.085, "kernel_runtime/", "checks, dispatch", color=RUNTIME,
        size=9)
    arrow(ax, (x + 0.172, y + 0.042), (x + 0.208, y + 0.042))
    ax.text(x + w / 2, y - 0.03, "separate: they import neither derive nor codegen",
            ha="center", fontsize=8, style="italic")


def flow(ax):
    """From a specification to a file: what `derive generate` does, left column top down."""
    ax.text(0.72, 0.975, "Data flow of  derive generate", ha="center", fontsize=12,
            fontweight="bold")
    x, w, h = 0.47, 0.27, 0.085
    steps = [
        ("specification", "blocks.py: CouplingBlock\ngaussian_kl.py: Parameterization", FLOW),
        ("Derivation", "checked Steps, Results\nderivation.py, arrangement.py", FLOW),
        ("kernel spec: Module", "kernels.py -> spec.py\nKernel, Arg, Output", FLOW),
        ("plan (target-free)", "codegen/plan.py\ncalls, CSE, pieces, safe points", FLOW),
        ("backend", "codegen/backends.py\nnumpy_backend  xp_backend", FLOW),
        ("template", "codegen/templates/\nmodule / function / body_*.jinja", FLOW),
        ("file", "derive/files.py: compare bytes,\natomic rename, MANIFEST, flock", FILE),
    ]
    ys = []
    y = 0.93
    for title, body, color in steps:
        y -= h
        ys.append(y)
        box(ax, x, y, w, h, title, body, color=color, size=9)
        y -= 0.032
    labels = ["derive (build)", "kernels.py", "plan_kernel", "Backend.lower", "render",
              "write_files"]
    for (a, b), label in zip(zip(ys, ys[1:], strict=False), labels, strict=True):
        arrow(ax, (x + w / 2, a - 0.002), (x + w / 2, b + h + 0.002), label)
    # the registry that drives it all
    box(ax, 0.79, ys[0] - 0.005, 0.19, h + 0.01, "questions.py", "the one registry:\n"
        "derivations, sections,\nkernel modules", color=LAYER, size=9)
    arrow(ax, (0.79 - 0.012, ys[0] + h / 2), (x + w + 0.012, ys[0] + h / 2))
    ax.text((x + w + 0.79) / 2, ys[0] + h / 2 + 0.012, "names", fontsize=7.5, ha="center",
            style="italic", color="#333333")
    # the other consumers of a derivation
    box(ax, 0.79, ys[1] - 0.035, 0.19, h + 0.02, "typesetting", "document.py, notebook.py\n"
        "codegen/latex.py\n-> solutions.tex, .ipynb", color=LAYER, size=9)
    arrow(ax, (x + w + 0.012, ys[1] + h / 2 + 0.01), (0.79 - 0.012, ys[1] + h / 2 + 0.01))
    box(ax, 0.79, ys[2] - 0.06, 0.19, h, "derive check", "derive/check/*\nagainst build(...)",
        color=LAYER, size=9)
    arrow(ax, (x + w + 0.012, ys[1] + 0.02), (0.79 - 0.012, ys[2] - 0.06 + h / 2), rad=-0.25)
    # the typeset files also go through files.py: down the gap between the columns
    gap_x = 0.766
    ax.plot([0.79 - 0.012, gap_x, gap_x], [ys[1] - 0.02, ys[1] - 0.02, ys[-1] + h / 2],
            color="#333333", linewidth=1.2, linestyle="--")
    arrow(ax, (gap_x, ys[-1] + h / 2), (x + w + 0.012, ys[-1] + h / 2), dashed=True)
    # the output and the runtime it calls
    box(ax, 0.79, ys[-1] - 0.105, 0.19, 0.085, "generated/*.py", "imports kernel_runtime\n"
        "at call time", color=FILE, size=9)
    arrow(ax, (x + w / 2, ys[-1] - 0.012), (0.79 - 0.012, ys[-1] - 0.105 + 0.042), rad=0.25)


def main() -> None:
    fig = plt.figure(figsize=(12, 8.2), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    layers(ax)
    flow(ax)
    fig.savefig(OUT, dpi=110, facecolor="white")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
