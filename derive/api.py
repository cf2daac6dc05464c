r"""The public API of ``derive``: the one module a material author imports.

Material (a question, its blocks or parameterizations, its derivations, its document
section and its kernels) is written with the names below and nothing else from the engine.
Every name is re-exported from the module that defines it, with its own type and
docstring (``help(derive.api.Step)``); each has an example here, run as a doctest.

The vocabulary: symbols and functions
-------------------------------------

A coupling block is written in index notation (:mod:`derive.vocabulary`): ``x1``, ``x2``,
``s``, ``y1``, ``y2`` are the ``i``-th components of the vectors of those names, ``F``
and ``G`` the ``i``-th components of two vector-valued functions of ``x2``, ``JF`` and
``JG`` the entries ``[i, j]`` of their Jacobians, ``n`` the vectors' length:

    >>> import sympy as sp
    >>> x1, x2, s, y1, y2
    (x1[i], x2[i], s[i], y1[i], y2[i])
    >>> F, G, JF, JG
    (F[i], G[i], JF[i, j], JG[i, j])
    >>> i.is_integer, j.is_nonnegative, n.is_positive
    (True, True, True)
    >>> to_vector(x1 * sp.exp(s) + F)
    x1*exp(s) + F(x2)

A block may bring parameters of its own: :func:`param_vector` is the ``i``-th component of
a new parameter vector of shape ``(n,)``, a kernel argument of that name checked like
``s``; :func:`param_scalar` a real scalar parameter, a kernel argument of shape ``()``:

    >>> t, c = param_vector("t"), param_scalar("c")
    >>> to_vector(sp.exp(s) * x2 + t), c.is_real
    (t + x2*exp(s), True)
    >>> try:
    ...     param_vector("s")
    ... except ValueError as error:
    ...     print(str(error).split(";")[0])
    name: 's' is a name of the vocabulary

The math's own functions (:mod:`derive.nodes`), which every printer and backend knows,
and a sum over the component axis:

    >>> u = sp.Symbol("u", real=True)
    >>> softplus(u).rewrite(sp.exp), softplus(u).diff(u)
    (log(exp(u) + 1), sigmoid(u))
    >>> sigmoid(u).rewrite(sp.exp)
    1/(1 + exp(-u))
    >>> ComponentSum(sp.log(sp.Symbol("s")))
    ComponentSum(log(s))

Probability (:mod:`derive.probability`): expectations, variances and the KL divergence
as unevaluated nodes, each under a distribution named by a label, and the Gaussian
log-density written out:

    >>> Expectation(u**2, "q")
    Expectation(u**2, q)
    >>> Variance(u, "q")
    Variance(u, q)
    >>> KL(sp.Symbol("log_q"), sp.Symbol("log_p"), "q").definition()
    Expectation(-log_p + log_q, q)
    >>> gaussian_log_pdf(u, 0, 1)
    -u**2/2 - log(2*pi)/2

Derivations
-----------

A :class:`Derivation` is a chain of :class:`Step` equalities and named :class:`Result`
values (:mod:`derive.derivation`); building it checks every step, and a step that does
not hold raises :class:`StepCheckError`:

    >>> a = sp.Symbol("a", positive=True)
    >>> step = Step(sp.log(a**2), 2 * sp.log(a), "the log of a power")
    >>> demo = Derivation("9.1", "Logs", "Simplify a log.", [step],
    ...                   [Result("value", 2 * sp.log(a), "the simplified log")])
    >>> demo.result("value")
    2*log(a)
    >>> try:
    ...     Derivation("9.1", "Logs", "Wrong.", [Step(sp.log(a**2), sp.log(a), "wrong")], [])
    ... except StepCheckError as error:
    ...     print(error)
    9.1, step 1 ('wrong'): log(a**2) = log(a) is false

A kernel may compute a derived value in another form (a name it computes once in place of
its definition): :func:`kernel_forms` makes each such :data:`Edit` a checked step of a
derivation no document shows, and the kernel takes the form from its results:

    >>> b = sp.Symbol("b", positive=True)
    >>> edit: Edit = ("twice", 2 * sp.log(a), sp.log(b), "b is a squared", {b: a**2})
    >>> kernel_forms("9.1k", "Logs", [edit]).result("twice")
    log(b)

The material
------------

A :class:`CouplingBlock` (:mod:`derive.coupling`) is given by ``y1`` and ``y2`` in the
vocabulary above; one that the engine cannot derive raises :class:`SpecificationError`:

    >>> block = CouplingBlock("coupling_shift", "A shift", x1 + F, x2)
    >>> block.outputs
    {'y1': F[i] + x1[i], 'y2': x2[i]}
    >>> try:
    ...     CouplingBlock("coupling_swap", "Not triangular", x2, x1)
    ... except SpecificationError as error:
    ...     print(str(error).split(";")[0])
    coupling_swap: y2 must not depend on x1

A :class:`Parameterization` (:mod:`derive.parameterization`) says how a scale parameter
gives the standard deviation ``sigma``:

    >>> rho = sp.Symbol("rho", real=True)
    >>> scale = Parameterization("rho", "gaussian_kl_softplus", rho, softplus(rho),
    ...                          "sigma = softplus(rho)")
    >>> scale.positive, scale.pair_module
    (False, 'gaussian_kl_pair_softplus')

A :class:`Question` (:mod:`derive.material`) says how to derive each of its variants and
in which :class:`Section` of the solutions document it sits; a section opens with an
:class:`Introduction`:

    >>> intro = Introduction("A log of a square:", ((sp.log(a**2), 2 * sp.log(a), False),))
    >>> section = Section("9", "Logarithms", lambda: intro)
    >>> question = Question("9.1", "Simplify a log", ("",), lambda variant: demo, section)
    >>> question.default, question.derive(question.default).result("value")
    ('', 2*log(a))
    >>> question.section.introduction().text
    'A log of a square:'

A question may range over a kind of the material, ``over="parameterizations"`` (or
``"blocks"``): every entry of that kind in the material loaded, another package's too, is
a variant of it, and its callables receive the entry itself. The coursework's questions
2.3 to 2.4p do, so a package that brings a :class:`Parameterization` gets their
derivations, kernels and document sections:

    >>> over = Question("9.3", "A scale", (), lambda p: demo, section, over="parameterizations")
    >>> Material("m", parameterizations={"rho": scale}, questions={"9.3": over}
    ...          ).questions["9.3"].variants
    ('rho',)

A :class:`Material` gathers a package's blocks, parameterizations, questions and sections
under one name; a material package exposes one as ``MATERIAL``, which ``derive ...
--material MODULE`` loads. Materials combine, and two that define the same name are
refused in one line (:class:`MaterialError`):

    >>> mine = Material("mine", blocks={"coupling_shift": block}, questions={"9.1": question})
    >>> sorted(Material.combine([mine, Material("other")]).questions)
    ['9.1']
    >>> try:
    ...     Material.combine([mine, Material("again", questions={"9.1": question})])
    ... except MaterialError as error:
    ...     print(error)
    material 'mine' and material 'again' both define question '9.1'

A question that ``derive check`` marks says how its answers read: ``answers``, a function
of the variant and its derivation giving :class:`Answers` (:mod:`derive.answers`): the
:class:`Quantity` values an answer gives, each with the derived expressions it may equal,
the left-hand sides that name them, the symbols it may write (``DIAG`` and ``IDENTITY``
for matrices):

    >>> def demo_answers(variant, d):
    ...     value = Quantity("value", "the value", (d.result("value"),))
    ...     return Answers(d.qid, variant, (value,), (), ((r"v", ("value",)),),
    ...                    index_form=False, symbols={"a": a, "diag": DIAG, "I": IDENTITY})
    >>> demo_answers("", demo).quantities[0].references
    (2*log(a),)

The registry's helpers take the questions explicitly: :func:`build` and :func:`resolve`
(an unknown id or variant raises :class:`UnknownQuestionError`), :func:`marking` (the
marking scheme, :class:`Mark` lines), :func:`all_derivations` and :func:`kernel_modules`:

    >>> build("9.1", questions=mine.questions).result("value")
    2*log(a)
    >>> resolve("9.1", questions=mine.questions)[1], len(all_derivations(mine.questions))
    ('', 1)
    >>> question = Question("9.1", "Simplify a log", ("",), lambda variant: demo, section,
    ...                     points={"value": 2}, step_points=1)
    >>> marking("9.1", {"9.1": question}) == [Mark("step", "1", 1), Mark("result", "value", 2)]
    True
    >>> kernel_modules(mine.questions)
    []
    >>> try:
    ...     build("9.2", questions=mine.questions)
    ... except UnknownQuestionError as error:
    ...     print(error)
    unknown question '9.2'; known questions: 9.1

The engine's derivations of any coupling block (:mod:`derive.coupling`): 1.1 to 1.3 and
1.3n (:func:`derive_inverse`, :func:`derive_jacobian`, :func:`derive_determinant`,
:func:`derive_arrangement`), and the Jacobian's block matrix as 1.3n arranges it
(:func:`arranged_blocks`, what a coupling kernel module returns):

    >>> derive_inverse(block).result("x1"), derive_jacobian(block).result("dy1_dx1")
    (-F[i] + y1[i], KroneckerDelta(i, j))
    >>> derive_determinant(block).result("log_abs_det"), len(derive_arrangement(block).steps) > 0
    (0, True)
    >>> arranged_blocks(block).blocks[0][0].is_diagonal
    True

:func:`coupling_kernels` is the kernel module of any block (forward, inverse, jacobian,
log_det_jacobian, forward_and_log_det), with the block's own parameter vectors as
arguments after ``s``; a question returns it as its ``kernels``:

    >>> shifted = CouplingBlock("coupling_shifted", "a shifted block", sp.exp(G) * x1 + F,
    ...                         sp.exp(s) * x2 + t)
    >>> coupling_kernels(shifted).kernels[0].arg_names
    ('x1', 'x2', 's', 't', 'F', 'G')

Floating-point arrangement (:mod:`derive.arrangement`): :func:`apply_rewrites` rewrites an
expression by a sequence of rules (:data:`KERNEL_REWRITES`, the kernels' own) and returns
the checked steps; :func:`safe_point` (:mod:`derive.pieces`) is a point where every piece
of a piecewise value is finite. The components of the coupling block's outputs as indexed
bases are ``Y1`` and ``Y2``; :class:`GaussianModel` (:mod:`derive.probability`) is a
concrete model in which abstract probability steps are checked:

    >>> arranged, steps = apply_rewrites(sp.log(sp.exp(u) + 1), KERNEL_REWRITES)
    >>> arranged
    softplus(u)

:data:`LOG_REWRITES` take a log-determinant to a sum that never forms an exponential:

    >>> apply_rewrites(sp.log(1 / (1 + sp.exp(-u))), LOG_REWRITES)[0]
    -softplus(-u)

Some rules take data: :func:`vanishing_factors_apart` (a scale and where it reaches its
optimum) keeps the factors that vanish there apart, :func:`expm1_as_sinh` (a standard
deviation ``exp(a/2)``) writes ``expm1(a)`` as ``2 exp(a/2) sinh(a/2)``, and
:data:`SCALED_SQUARES` halves before it squares; each gives checked steps like the others:

    >>> sigma = sp.Symbol("sigma", positive=True)
    >>> apply_rewrites(sigma**2 / 2 - 1, [SCALED_SQUARES])[0]
    -1 + 2*(sigma/2)**2
    >>> apply_rewrites(sigma**2 - 1, [vanishing_factors_apart(sigma, [1])])[0]
    (sigma - 1)*(sigma + 1)
    >>> apply_rewrites(sp.codegen.cfunctions.expm1(u), [expm1_as_sinh(sp.exp(u / 2))])[0]
    2*exp(u/2)*sinh(u/2)
    >>> Y1[i], Y2[i], safe_point(sp.log(u))
    (y1[i], y2[i], {u: 1})
    >>> mean = sp.Symbol("mean", real=True)
    >>> q = sp.Symbol("q")
    >>> model = GaussianModel("one normal", densities={}, distributions={q: {u: (mean, 1)}})
    >>> model.evaluate(Expectation(u**2, q))
    mean**2 + 1

The kernel spec
---------------

What a derivation hands to code generation (:mod:`derive.spec`): a :class:`Module` of
:class:`Kernel` functions, each with its :class:`Arg` inputs and :class:`Output` values:

    >>> x = Arg("x", "elementwise", "the input")
    >>> double = Kernel("double", (x,), (Output("y", 2 * x.symbol, "twice x"),),
    ...                 "Twice the input.")
    >>> double.arg_names, [out.name for out in double.returns]
    (('x',), ['y'])
    >>> module = Module("demo", "A demo module.", "One kernel.", (double,),
    ...                 "derive.api's docstring", "elementwise")
    >>> [kernel.name for kernel in module.kernels]
    ['double']

Arranging a user's expression
-----------------------------

:func:`arrange` (:mod:`derive.search`, what ``derive arrange`` runs) measures an
expression's error in ulp against mpmath over a box, keeps the checked rewrites that lower
it, and gives the :class:`Module` of a kernel ``f``:

    >>> found = arrange("log(1 - exp(-x))", ["x in [1e-300, 700]"], samples=200)
    >>> found.after.max_ulp <= 4, found.before.nonfinite > 0, found.after.nonfinite
    (True, True, 0)
    >>> [kernel.name for kernel in found.module().kernels]
    ['f']
"""

from __future__ import annotations

from .answers import DIAG, IDENTITY, Answers, Quantity
from .arrangement import (
    KERNEL_REWRITES,
    LOG_REWRITES,
    SCALED_SQUARES,
    expm1_as_sinh,
    vanishing_factors_apart,
)
from .arrangement import arrange as apply_rewrites
from .coupling import (
    CouplingBlock,
    SpecificationError,
    arranged_blocks,
    coupling_kernels,
    derive_arrangement,
    derive_determinant,
    derive_inverse,
    derive_jacobian,
)
from .derivation import (
    BackwardTable,
    ComputationGraph,
    Derivation,
    Edit,
    GraphNode,
    MatrixDisplay,
    Result,
    Step,
    StepCheckError,
    kernel_forms,
)
from .material import (
    Introduction,
    Mark,
    Material,
    MaterialError,
    Question,
    Section,
    UnknownQuestionError,
    all_derivations,
    build,
    kernel_modules,
    marking,
    resolve,
)
from .nodes import ComponentSum, Opaque, sigmoid, simplify, softplus
from .parameterization import Parameterization
from .pieces import safe_point
from .probability import KL, Expectation, GaussianModel, Variance, gaussian_log_pdf
from .search import arrange
from .spec import Arg, Kernel, Module, Output
from .vocabulary import (
    JF,
    JG,
    Y1,
    Y2,
    F,
    G,
    i,
    j,
    n,
    param_scalar,
    param_vector,
    s,
    to_vector,
    x1,
    x2,
    y1,
    y2,
)

__all__: list[str] = [
    # the vocabulary: index notation of a coupling block
    "i", "j", "n", "x1", "x2", "s", "y1", "y2", "F", "G", "JF", "JG", "Y1", "Y2", "to_vector",
    "param_vector", "param_scalar",
    # the math's own functions and nodes
    "softplus", "sigmoid", "ComponentSum", "Opaque", "simplify",
    # probability
    "Expectation", "Variance", "KL", "gaussian_log_pdf", "GaussianModel",
    # derivations
    "Step", "Result", "Derivation", "StepCheckError",
    # what a derivation shows besides its steps, for the typesetting
    "MatrixDisplay", "ComputationGraph", "GraphNode", "BackwardTable",
    # a derived value in the form a kernel computes it, as a checked step
    "kernel_forms", "Edit",
    # floating-point arrangement
    "apply_rewrites", "KERNEL_REWRITES", "LOG_REWRITES", "safe_point",
    # arrangement rules that take data (a scale and its optimum, a standard deviation)
    "SCALED_SQUARES", "vanishing_factors_apart", "expm1_as_sinh",
    # the material
    "CouplingBlock", "SpecificationError", "Parameterization", "Question", "Section",
    "Introduction", "Material", "MaterialError", "Mark", "UnknownQuestionError",
    # how derive check reads a question's answers
    "Answers", "Quantity", "DIAG", "IDENTITY",
    # the registry's helpers, and the derivations of any coupling block
    "build", "resolve", "marking", "all_derivations", "kernel_modules",
    "derive_inverse", "derive_jacobian", "derive_determinant", "derive_arrangement",
    "arranged_blocks", "coupling_kernels",
    # the kernel spec
    "Kernel", "Arg", "Output", "Module",
    # an arrangement for floating point found by measuring (derive arrange)
    "arrange",
]
