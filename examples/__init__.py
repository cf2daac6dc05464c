r"""Two small training examples that use the generated kernels for every derived part.

- :mod:`examples.flow_moons`: a RealNVP-style flow on two moons, its coupling blocks from
  ``generated/<block>.py``.
- :mod:`examples.vae_digits`: a VAE on scikit-learn's digits, its KL term and the KL
  gradient estimators from ``generated/gaussian_kl_logvar.py``.

Both need the ``examples`` extra (PyTorch, scikit-learn, matplotlib, tqdm) and run from the
repository root, which puts ``derive``, ``generated`` and ``examples`` on the import path::

    python -m examples.flow_moons --help
    python -m examples.vae_digits --help

``examples`` is deliberately not installed as a package: a top-level package of that name
in ``site-packages`` would collide with other projects' ``examples``.
"""

__all__: list[str] = []
