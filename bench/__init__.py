"""Benchmarks for the generated kernels (issue 5).

``python -m bench`` (or ``python bench/run.py``) measures, in one process and one run:

1. the closed-form log-determinant of the coupling block against PyTorch autodiff
   (``torch.func.jacrev`` + ``torch.linalg.slogdet``) for ``d = 8 .. 512``;
2. every generated kernel against the hand-written NumPy expression of the same formula
   (:mod:`bench.handwritten`), for batches of ``1e3`` to ``1e7`` elements;
3. the element-wise kernels against the memory-bandwidth floor (``numpy.copyto`` of as
   many bytes as the kernel reads and writes);
4. regeneration: ``derive generate --check`` cold, and the explicit ``n = 64``
   Jacobian and log-determinant derived with SymPy (:mod:`bench.regen`).

It writes ``benchmarks.md`` (and ``benchmarks.png`` when matplotlib is importable) to
``--out`` (default ``docs/``) and prints the tables. ``--quick`` finishes in under a
minute; PyTorch and matplotlib are optional (the ``bench`` extra) and their parts are
skipped with a note when they are missing.
"""

import os as _os
import sys as _sys

#: One thread for every library (NumPy's OpenBLAS, PyTorch's OpenMP and MKL), unless the
#: environment says otherwise: on a shared two-core machine, multi-threaded timings swing
#: by 10x whenever anything else runs, and the element-wise kernels use one thread anyway.
#: Set before NumPy or PyTorch is imported; ``THREADS_PINNED`` says whether that held.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _var in THREAD_VARIABLES:
    _os.environ.setdefault(_var, "1")
THREADS_PINNED = "numpy" not in _sys.modules and "torch" not in _sys.modules
