r"""The coursework as material: questions 1 and 2, written against :mod:`derive.api` only.

The package holds the coupling blocks (:mod:`.blocks`), the Gaussian KL's
parameterizations and derivations (:mod:`.gaussian_kl`), the free-energy derivations
(:mod:`.free_energy`), the kernel specs (:mod:`.kernels`) and the question registry
(:mod:`.questions`). It imports nothing of the engine but :mod:`derive.api`
(``tests/test_material.py`` checks it); the engine loads it by name, as it loads any
``--material`` (:mod:`derive.loader`), and it is the default.

Example:
    >>> MATERIAL.name, sorted(MATERIAL.blocks)[:2]
    ('derive.coursework', ['coupling', 'coupling_additive'])
"""

from __future__ import annotations

from .questions import MATERIAL

__all__ = ["MATERIAL"]
