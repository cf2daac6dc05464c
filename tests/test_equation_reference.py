"""The reference ``derive test`` takes from a block's own equations, against formulas typed
by hand.

:func:`derive.selftest.equation_reference` is engine code: SymPy differentiates a block's
two equations and mpmath evaluates them. The coupling-block tests and ``derive test
--material`` compare generated kernels with it, so if it were wrong (a derivative of the
wrong symbol, a sign, an argument in the wrong place) those tests would pass on wrong
kernels. Here it is compared with values typed in from the equations, in mpmath: the
scales of :data:`tests.reference.BLOCK_REFERENCES` for the shipped blocks, and, for blocks
that are not affine, the slope written out by hand.
"""

from __future__ import annotations

import itertools

import mpmath
import pytest
import sympy as sp

from derive.api import F, G, x1, x2
from derive.coursework.blocks import BLOCKS
from derive.selftest import equation_reference
from tests.reference import BLOCK_REFERENCES

POINTS = [dict(zip(("x1", "x2", "s", "F", "G"), p, strict=True))
          for p in itertools.product((-2.5, 0.0, 0.75), (-1.0, 3.0), (0.5,), (-0.25, 1.5),
                                     (-3.0, 0.0, 2.0))]


def _close(got: object, want: object) -> bool:
    return abs(got - want) <= mpmath.mpf(10) ** -40 * (1 + abs(want))


#: the shipped blocks typed by hand (tests/test_coupling_blocks.py adds its user blocks to
#: BLOCK_REFERENCES when it is collected: those are not the coursework's)
SHIPPED = ("coupling", "coupling_affine", "coupling_additive", "coupling_glow",
           "coupling_soft_clamp")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_blocks_against_their_hand_typed_scales(name):
    """y1 = a(G) x1 + F: y1, its slope in x1 and in F, and log|det| against a(G) typed in."""
    block = BLOCKS[name]
    ref = equation_reference(block.y1, block.y2)
    scale = BLOCK_REFERENCES[name].scale_mp
    s_log = BLOCK_REFERENCES[name].s_log_scale_mp
    with mpmath.workdps(60):
        for p in POINTS:
            a = scale(mpmath.mpf(p["G"]))
            assert _close(ref.value("y1", p), a * p["x1"] + p["F"]), (name, p)
            assert _close(ref.value("y1_x1", p), a), (name, p)
            assert _close(ref.value("y1_F", p), 1), (name, p)
            want = mpmath.log(abs(a)) + s_log(mpmath.mpf(p["s"]))
            assert _close(ref.log_det(p), want), (name, p)


_HAND = {
    # y1 as written, and its slope dy1/dx1 written out by hand, as mpmath functions
    "cubic": (x1 + x1**3 / 3 + F,
              lambda p: p["x1"] + mpmath.mpf(p["x1"]) ** 3 / 3 + p["F"],
              lambda p: 1 + mpmath.mpf(p["x1"]) ** 2),
    "asinh_exp": (sp.asinh(x1) * sp.exp(G) + F,
                  lambda p: mpmath.asinh(p["x1"]) * mpmath.exp(p["G"]) + p["F"],
                  lambda p: mpmath.exp(p["G"]) / mpmath.sqrt(1 + mpmath.mpf(p["x1"]) ** 2)),
    "sinh_exp": (sp.sinh(x1) * sp.exp(G) + F,
                 lambda p: mpmath.sinh(p["x1"]) * mpmath.exp(p["G"]) + p["F"],
                 lambda p: mpmath.cosh(p["x1"]) * mpmath.exp(p["G"])),
}


@pytest.mark.parametrize("name", sorted(_HAND))
def test_blocks_that_are_not_affine_against_slopes_typed_by_hand(name):
    """A monotone block's value, slope and log-determinant (y2 = x2: log|slope| alone)."""
    y1, value, slope = _HAND[name]
    ref = equation_reference(y1, x2)
    with mpmath.workdps(60):
        for p in POINTS:
            assert _close(ref.value("y1", p), value(p)), (name, p)
            assert _close(ref.value("y1_x1", p), slope(p)), (name, p)
            assert _close(ref.log_det(p), mpmath.log(abs(slope(p)))), (name, p)


def test_a_wrong_hand_value_is_seen():
    """The comparison can fail: the cubic's slope without its 1 is told apart."""
    y1, _, slope = _HAND["cubic"]
    ref = equation_reference(y1, x2)
    p = POINTS[0]
    with mpmath.workdps(60):
        assert not _close(ref.value("y1_x1", p), slope(p) - 1)
