"""The typed IR: frozen nodes that check their shapes when built.

Nodes hash by identity (two equal-looking products are two nodes until CSE
merges them), which keeps hashing O(1) on deep DAGs; :meth:`Node.key` gives the
structural key CSE compares. Children are held directly, so a program is a DAG
of immutable objects; :mod:`.graph` turns it into a networkx graph.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, ClassVar

from .. import ops
from ..errors import ShapeError, Span
from . import sparsity
from .linalg import FUNCTIONS as LINALG
from .linalg import Sketch
from .types import FLOAT_DTYPES, OUTPUT, SCALAR, Type, dense_type, join_dtype, matrix_type  # noqa: F401

_ids = itertools.count()

# The value types live in .types (the sparsity rules read them too); ir re-exports them.
@dataclass(frozen=True, eq=False)
class Node:
    """Base IR node. Subclasses list child nodes in ``CHILDREN``; all other fields are attributes."""

    CHILDREN: ClassVar[tuple[str, ...]] = ()
    span: Span | None = field(default=None, kw_only=True, repr=False)
    type: Type = field(init=False, repr=False)
    uid: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "uid", next(_ids))
        object.__setattr__(self, "type", self.infer())

    def infer(self) -> Type:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # One getter per class, built once: `children` is on every traversal's hot path.
        names = cls.CHILDREN
        if not names:
            cls._get_children = staticmethod(lambda node: ())
        elif len(names) == 1:
            one = attrgetter(names[0])
            cls._get_children = staticmethod(lambda node: (one(node),))
        else:
            cls._get_children = staticmethod(attrgetter(*names))
        if len(names) in (1, 2) and "replacing_children" not in cls.__dict__:
            cls.replacing_children = _unrolled_replacing_children(names)

    @property
    def children(self) -> tuple[Node, ...]:
        return self._get_children(self)

    def attrs(self) -> dict[str, Any]:
        skip = {"span", "type", "uid", *self.CHILDREN}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def key(self) -> tuple:
        """Structural identity: class, attributes and the identities of the children."""
        return (type(self).__name__, tuple(sorted(self.attrs().items())), tuple(c.uid for c in self.children))

    def with_children(self, children: tuple[Node, ...]) -> Node:
        if all(a is b for a, b in zip(children, self.children, strict=True)):
            return self
        return self.replacing_children(children)

    def replacing_children(self, children: tuple[Node, ...]) -> Node:
        """A new node like this one over ``children`` (known to differ from the current ones).

        When every new child has its predecessor's type, the new node's type and
        shape checks are this node's (``infer`` reads only the attributes and the
        children's types), so it is copied instead of rebuilt: the rewrite passes
        do this for every ancestor of a change, tens of thousands of times on a
        large program."""
        names = self.CHILDREN
        old = self._get_children(self)
        for before, after in zip(old, children, strict=True):
            if before.type is not after.type and before.type != after.type:
                return replace(self, **dict(zip(names, children, strict=True)))
        new = object.__new__(type(self))
        state = new.__dict__
        state.update(self.__dict__)
        state.update(zip(names, children, strict=True))
        state["uid"] = next(_ids)
        return new

    def evolve(self, **changes: Any) -> Node:
        return replace(self, **changes)

    @property
    def op(self) -> str:
        return type(self).__name__.lower()

    def _fail(self, message: str) -> None:
        raise ShapeError(message, self.span)


def _unrolled_replacing_children(names: tuple[str, ...]):
    """:meth:`Node.replacing_children` unrolled for one or two children: the
    generic loop with ``zip`` was a sixth of the rewrite passes' time."""
    if len(names) == 1:
        (first,) = names

        def replacing_one(self, children):
            (child,) = children
            state = self.__dict__
            before = state[first].type
            if before is not child.type and before != child.type:
                return replace(self, **{first: child})
            new = object.__new__(type(self))
            fresh = new.__dict__
            fresh.update(state)
            fresh[first] = child
            fresh["uid"] = next(_ids)
            return new

        return replacing_one

    first, second = names

    def replacing_two(self, children):
        a, b = children
        state = self.__dict__
        before_a, before_b = state[first].type, state[second].type
        if (before_a is not a.type and before_a != a.type) or (before_b is not b.type and before_b != b.type):
            return replace(self, **{first: a, second: b})
        new = object.__new__(type(self))
        fresh = new.__dict__
        fresh.update(state)
        fresh[first] = a
        fresh[second] = b
        fresh["uid"] = next(_ids)
        return new

    return replacing_two


# ---------------------------------------------------------------- leaves


@dataclass(frozen=True, eq=False)
class Const(Node):
    value: float

    def infer(self) -> Type:
        return SCALAR


@dataclass(frozen=True, eq=False)
class Generate(Node):
    """random/randn/zeros/ones/eye: defined blockwise (executors.blockgen) so any executor can make it."""

    kind: str  # uniform | normal | zeros | ones | eye
    shape: tuple[int, int]
    dtype: str = "float64"
    seed: int = 0
    density: float | None = None  # random/randn with density=: sparse, non-zeros placed uniformly

    def infer(self) -> Type:
        if min(self.shape) < 1:
            self._fail(f"matrix dimensions must be positive, got {self.shape[0]}x{self.shape[1]}")
        if self.density is not None:
            return matrix_type(self.shape, self.dtype, "sparse", self.density * self.shape[0] * self.shape[1])
        return matrix_type(self.shape, self.dtype)

    def attrs(self) -> dict[str, Any]:
        out = {"kind": self.kind, "shape": self.shape, "dtype": self.dtype, "seed": self.seed}
        if self.density is not None:  # a dense generator reads as it did before density existed
            out["density"] = self.density
        return out


@dataclass(frozen=True, eq=False)
class Load(Node):
    path: str  # absolute
    format: str
    shape: tuple[int, int]
    dtype: str  # dtype after any requested cast
    options: tuple[tuple[str, Any], ...] = ()
    storage: str = "dense"
    nnz: int | None = None  # a sparse file's stored entries, read from its header or metadata

    def infer(self) -> Type:
        return matrix_type(self.shape, self.dtype, self.storage, self.nnz)

    def attrs(self) -> dict[str, Any]:
        out = {"path": self.path, "format": self.format, "shape": self.shape, "dtype": self.dtype,
               "options": self.options}
        if self.storage == "sparse":
            out["storage"] = "sparse"
        return out


@dataclass(frozen=True, eq=False)
class Literal(Node):
    """A NumPy array handed in through the Python API (held by reference, never copied)."""

    array: Any = field(compare=False)

    def infer(self) -> Type:
        nnz = getattr(self.array, "nnz", None)  # a SciPy sparse array stays sparse
        return matrix_type(tuple(self.array.shape), str(self.array.dtype), "dense" if nnz is None else "sparse", nnz)

    def attrs(self) -> dict[str, Any]:
        return {"shape": tuple(self.array.shape), "dtype": str(self.array.dtype)}

    def key(self) -> tuple:
        # Two arrays are the same value only when they are the same object (never compared by content).
        return ("Literal", id(self.array), tuple(self.array.shape), str(self.array.dtype))


@dataclass(frozen=True, eq=False)
class Frame(Node):
    """A Spark DataFrame handed in through the API, in coordinate (i, j, v) or row (i, row) form."""

    frame: Any = field(compare=False)
    form: str
    shape: tuple[int, int]
    dtype: str
    storage: str = "dense"
    nnz: int | None = None

    def infer(self) -> Type:
        return matrix_type(self.shape, self.dtype, self.storage, self.nnz)

    def attrs(self) -> dict[str, Any]:
        return {"frame_id": id(self.frame), "form": self.form, "shape": self.shape, "dtype": self.dtype,
                "storage": self.storage}


@dataclass(frozen=True, eq=False)
class Input(Node):
    """A value from an earlier part of a program with blocks (before a loop, the previous
    iteration, a branch): the run keeps it under ``slot`` between the parts. ``value_type``
    is its type; ``name`` is the program's name for it (explain)."""

    slot: str
    value_type: Type
    name: str = ""

    def infer(self) -> Type:
        return self.value_type

    def attrs(self) -> dict[str, Any]:
        return {"slot": self.slot}


# ---------------------------------------------------------------- operators


@dataclass(frozen=True, eq=False)
class Transpose(Node):
    CHILDREN: ClassVar = ("x",)
    x: Node

    def infer(self) -> Type:
        t = self.x.type
        if not t.is_matrix:
            self._fail("transpose needs a matrix")
        return matrix_type((t.shape[1], t.shape[0]), t.dtype, t.storage, t.nnz)


def _product_shape(node: Node, a: Type, b: Type, trans_a: bool, trans_b: bool) -> tuple[int, int]:
    if not (a.is_matrix and b.is_matrix):
        node._fail("@ needs two matrices; use * to scale by a scalar")
    m, k1 = reversed(a.shape) if trans_a else a.shape
    k2, n = reversed(b.shape) if trans_b else b.shape
    if k1 != k2:
        left = f"{m}x{k1}" + (" (transposed)" if trans_a else "")
        right = f"{k2}x{n}" + (" (transposed)" if trans_b else "")
        node._fail(f"matrix product needs left columns == right rows: {left} @ {right}")
    return (m, n)


@dataclass(frozen=True, eq=False)
class MatMul(Node):
    """a @ b, with transposes of the operands folded into flags rather than materialised."""

    CHILDREN: ClassVar = ("a", "b")
    a: Node
    b: Node
    trans_a: bool = False
    trans_b: bool = False

    def infer(self) -> Type:
        shape = _product_shape(self, self.a.type, self.b.type, self.trans_a, self.trans_b)
        storage, nnz = sparsity.product(self.a.type, self.b.type, self.trans_a, self.trans_b)
        return matrix_type(shape, join_dtype(self.a.type, self.b.type), storage, nnz)

    @property
    def inner(self) -> int:
        return self.a.type.shape[0 if self.trans_a else 1]


@dataclass(frozen=True, eq=False)
class Gemm(Node):
    """alpha * (a @ b) + beta * c in one pass (BLAS GEMM semantics)."""

    CHILDREN: ClassVar = ("a", "b", "c")
    a: Node
    b: Node
    c: Node
    alpha: float = 1.0
    beta: float = 1.0
    trans_a: bool = False
    trans_b: bool = False

    def infer(self) -> Type:
        shape = _product_shape(self, self.a.type, self.b.type, self.trans_a, self.trans_b)
        if not self.c.type.is_matrix or self.c.type.shape != shape:
            self._fail(f"GEMM addend must be {shape[0]}x{shape[1]}, got {self.c.type}")
        return matrix_type(shape, join_dtype(self.a.type, self.b.type, self.c.type))

    @property
    def inner(self) -> int:
        return self.a.type.shape[0 if self.trans_a else 1]


BINARY_OPS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "**": "power",
              "<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal",
              "==": "equal", "!=": "not_equal"}  # how describe() names the operators


def _elementwise_type(node: Node, operator: str, operands: tuple[Node, ...]) -> Type:
    """The result of an elementwise operation: scalars broadcast, matrices broadcast as NumPy
    does in two dimensions (a 1xc row, an rx1 column, a 1x1 across anything)."""
    declared = ops.ELEMENTWISE.get(operator)
    if declared is None or declared.arity != len(operands):
        node._fail(f"unknown operator {operator!r}")
    types = [o.type for o in operands]
    if not all(t.kind in ("matrix", "scalar") for t in types):
        node._fail(f"{operator} needs matrices or scalars")
    matrices = [t for t in types if t.is_matrix]
    if not matrices:
        return SCALAR
    if declared.scalar_only:
        node._fail(f"`{operator}` combines scalar conditions; for matrices use comparisons and where()")
    shape = matrices[0].shape
    for t in matrices[1:]:
        joined = ops.broadcast_shape(shape, t.shape)
        if joined is None:
            shapes = " and ".join(f"{m.shape[0]}x{m.shape[1]}" for m in matrices)
            node._fail(f"elementwise {operator} needs equal shapes or shapes that broadcast (each "
                       f"dimension equal, or 1 on one side), got {shapes}")
        shape = joined
    known = [(o.type, o.value if isinstance(o, Const) else None) for o in operands]
    storage, nnz = sparsity.elementwise(operator, known, shape)
    return matrix_type(shape, join_dtype(*matrices), storage, nnz)


@dataclass(frozen=True, eq=False)
class Binary(Node):
    """An elementwise binary operation of :mod:`jampi_dsl.ops` (``+ - * / **``, comparisons,
    ``maximum``...); scalars and NumPy-broadcastable matrices combine."""

    CHILDREN: ClassVar = ("a", "b")
    operator: str
    a: Node
    b: Node

    def infer(self) -> Type:
        return _elementwise_type(self, self.operator, (self.a, self.b))


UNARY_OPS = ops.UNARY


@dataclass(frozen=True, eq=False)
class Unary(Node):
    CHILDREN: ClassVar = ("x",)
    operator: str
    x: Node

    def infer(self) -> Type:
        if self.operator not in UNARY_OPS:
            self._fail(f"unknown function {self.operator!r}")
        return _elementwise_type(self, self.operator, (self.x,))


@dataclass(frozen=True, eq=False)
class Where(Node):
    """``where(c, a, b)``: ``a`` where ``c`` is non-zero, else ``b``; all three broadcast."""

    CHILDREN: ClassVar = ("c", "a", "b")
    c: Node
    a: Node
    b: Node

    def infer(self) -> Type:
        return _elementwise_type(self, "where", (self.c, self.a, self.b))


REDUCE_OPS = ("sum", "trace", "norm", "mean", "max", "min", "argmax", "argmin", "nnz")
AXIS_REDUCE_OPS = ("sum", "mean", "max", "min", "argmax", "argmin")


@dataclass(frozen=True, eq=False)
class Reduce(Node):
    """A reduction to a scalar, or along ``axis`` (0: a 1xc row of column results, 1: an rx1
    column of row results)."""

    CHILDREN: ClassVar = ("x",)
    operator: str
    x: Node
    axis: int | None = None

    def infer(self) -> Type:
        t = self.x.type
        if self.operator not in REDUCE_OPS:
            self._fail(f"unknown reduction {self.operator!r}")
        if not t.is_matrix:
            self._fail(f"{self.operator}() needs a matrix, got a scalar")
        if self.operator == "trace" and t.shape[0] != t.shape[1]:
            self._fail(f"trace() needs a square matrix, got {t.shape[0]}x{t.shape[1]}")
        if self.axis is None:
            if self.operator in ("argmax", "argmin"):
                self._fail(f"{self.operator}() needs axis=0 or axis=1")
            return SCALAR
        if self.operator not in AXIS_REDUCE_OPS:
            self._fail(f"{self.operator}() takes no axis")
        if self.axis not in (0, 1):
            self._fail(f"axis must be 0 or 1, got {self.axis}")
        shape = (1, t.shape[1]) if self.axis == 0 else (t.shape[0], 1)
        # Indices are whole numbers, exact in float64 whatever the input's dtype.
        return matrix_type(shape, "float64" if self.operator.startswith("arg") else t.dtype)

    def attrs(self) -> dict[str, Any]:
        out = {"operator": self.operator}
        if self.axis is not None:  # a whole-matrix reduction reads as it did before axes existed
            out["axis"] = self.axis
        return out


def _linalg_type(node: Node, operator: str, operands: tuple[Node, ...], part: int, k: int | None) -> Type:
    declared = LINALG.get(operator)
    if declared is None or declared.inputs != len(operands):
        node._fail(f"unknown linear-algebra function {operator!r}")
    for operand in operands:
        if not operand.type.is_matrix:
            node._fail(f"{operator}() needs matrices, got a scalar")
    shapes = declared.shapes([o.type.shape for o in operands], k)
    if isinstance(shapes, str):
        node._fail(shapes)
    return matrix_type(shapes[part], join_dtype(*(o.type for o in operands)))


@dataclass(frozen=True, eq=False)
class Factor(Node):
    """Result ``part`` of a linear-algebra function of one matrix (``diag inv cholesky qr svd
    eigh``, see :mod:`.linalg`); the parts of one factorisation are computed together."""

    CHILDREN: ClassVar = ("x",)
    operator: str
    x: Node
    part: int = 0
    k: int | None = None
    sketch: Sketch | None = None  # svd(A, k=, oversample=, iters=, seed=) when randomized

    def infer(self) -> Type:
        return _linalg_type(self, self.operator, (self.x,), self.part, self.k)

    @property
    def sketching(self) -> Sketch:
        return self.sketch or Sketch()

    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        if len(LINALG[self.operator].parts) > 1:
            out["part"] = LINALG[self.operator].parts[self.part]
        if self.k is not None:
            out["k"] = self.k
        if self.sketch is not None:
            out["sketch"] = self.sketch
        return out


@dataclass(frozen=True, eq=False)
class Solve(Node):
    """``solve(A, B)`` or ``lstsq(A, B)``."""

    CHILDREN: ClassVar = ("a", "b")
    operator: str
    a: Node
    b: Node

    def infer(self) -> Type:
        return _linalg_type(self, self.operator, (self.a, self.b), 0, None)


LINALG_NODES = (Factor, Solve)


@dataclass(frozen=True, eq=False)
class Concat(Node):
    """``a`` and ``b`` side by side (``axis=1``, hcat) or one on top of the other (``axis=0``, vcat)."""

    CHILDREN: ClassVar = ("a", "b")
    axis: int
    a: Node
    b: Node

    def infer(self) -> Type:
        a, b = self.a.type, self.b.type
        name = "hcat" if self.axis == 1 else "vcat"
        if not (a.is_matrix and b.is_matrix):
            self._fail(f"{name}() joins matrices, got a scalar")
        keep = 0 if self.axis == 1 else 1
        if a.shape[keep] != b.shape[keep]:
            what = "rows" if keep == 0 else "columns"
            self._fail(f"{name}() needs the same number of {what}: {a.shape[0]}x{a.shape[1]} and "
                       f"{b.shape[0]}x{b.shape[1]}")
        shape = (a.shape[0], a.shape[1] + b.shape[1]) if self.axis == 1 else (a.shape[0] + b.shape[0], a.shape[1])
        if a.is_sparse and b.is_sparse:
            return matrix_type(shape, join_dtype(a, b), "sparse", a.nnz + b.nnz)
        return matrix_type(shape, join_dtype(a, b))


@dataclass(frozen=True, eq=False)
class Store(Node):
    """``sparse(X)`` or ``dense(X)``: the same values in the other storage."""

    CHILDREN: ClassVar = ("x",)
    x: Node
    storage: str

    def infer(self) -> Type:
        t = self.x.type
        if not t.is_matrix:
            self._fail(f"{self.storage}() needs a matrix, got a scalar")
        # A dense matrix's non-zeros are not known before the run: at most every entry.
        return matrix_type(t.shape, t.dtype, self.storage, t.nonzeros)


def _region(node: Node, x: Type, rows: int, cols: int) -> None:
    if not x.is_matrix:
        node._fail("indexing needs a matrix, got a scalar")
    if rows < 1 or cols < 1 or rows > x.shape[0] or cols > x.shape[1]:
        node._fail(f"the region {rows}x{cols} does not fit in a {x.shape[0]}x{x.shape[1]} matrix")
    for start, size, extent, what in ((node.i, rows, x.shape[0], "row"), (node.j, cols, x.shape[1], "column")):
        if not start.type.is_scalar:
            node._fail(f"a {what} index must be a scalar")
        if isinstance(start, Const) and not 0 <= start.value <= extent - size:
            node._fail(f"{what} index {start.value:g} is out of range for {extent} {what}s")


@dataclass(frozen=True, eq=False)
class Index(Node):
    """``X[r, c]``: the ``rows`` x ``cols`` region of ``x`` starting at row ``i``, column ``j``.

    Sizes are known before the run; the starts are scalars (a loop variable may be one).
    ``scalar``: ``X[i, j]`` gives the entry itself, not a 1x1 matrix."""

    CHILDREN: ClassVar = ("x", "i", "j")
    x: Node
    i: Node
    j: Node
    rows: int
    cols: int
    scalar: bool = False

    def infer(self) -> Type:
        _region(self, self.x.type, self.rows, self.cols)
        x = self.x.type
        if self.scalar:
            return SCALAR
        return matrix_type((self.rows, self.cols), x.dtype, x.storage,
                           sparsity.region(x, self.rows, self.cols) if x.is_sparse else None)


@dataclass(frozen=True, eq=False)
class Update(Node):
    """``X[r, c] = Y``: a copy of ``x`` with its ``rows`` x ``cols`` region from row ``i``,
    column ``j`` replaced by ``y`` (a matrix of the region's shape, or a scalar)."""

    CHILDREN: ClassVar = ("x", "y", "i", "j")
    x: Node
    y: Node
    i: Node
    j: Node
    rows: int
    cols: int

    def infer(self) -> Type:
        _region(self, self.x.type, self.rows, self.cols)
        y = self.y.type
        if y.is_matrix and y.shape != (self.rows, self.cols):
            self._fail(f"the region is {self.rows}x{self.cols}, the value assigned is {y.shape[0]}x{y.shape[1]}")
        if not (y.is_matrix or y.is_scalar):
            self._fail("assign a matrix or a scalar")
        x = self.x.type
        if x.is_sparse:  # the region may fill in
            return matrix_type(x.shape, x.dtype, "sparse", x.nnz + self.rows * self.cols)
        return x


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True, eq=False)
class Save(Node):
    CHILDREN: ClassVar = ("x",)
    x: Node
    path: str  # absolute
    format: str
    options: tuple[tuple[str, Any], ...] = ()

    def infer(self) -> Type:
        if not self.x.type.is_matrix:
            self._fail("save() needs a matrix; use print() for a scalar")
        return OUTPUT

    @property
    def writes_every_entry(self) -> bool:
        """.npy, .csv and row-form Parquet hold every entry; .npz, .mtx and coordinate Parquet
        the non-zeros only."""
        if self.format in ("npz", "mtx"):
            return False
        return self.format != "parquet" or dict(self.options).get("form", "coordinate") == "rows"


@dataclass(frozen=True, eq=False)
class Print(Node):
    CHILDREN: ClassVar = ("x",)
    x: Node
    label: str

    def infer(self) -> Type:
        if self.x.type.kind not in ("matrix", "scalar"):
            self._fail("print() needs a matrix or a scalar")
        return OUTPUT


@dataclass(frozen=True, eq=False)
class Message(Node):
    """``print("iteration", i, "residual", rr)``: strings and values, shown on one line
    (a matrix on the lines after it). ``texts[k]`` is item k's string, or None for a value;
    the values are the children, in order."""

    values: tuple[Node, ...]
    texts: tuple[str | None, ...]

    def infer(self) -> Type:
        for value in self.values:
            if value.type.kind not in ("matrix", "scalar"):
                self._fail("print() needs strings, matrices or scalars")
        return OUTPUT

    def attrs(self) -> dict[str, Any]:
        return {"texts": self.texts}

    def replacing_children(self, children: tuple[Node, ...]) -> Node:
        return replace(self, values=tuple(children))


Message._get_children = staticmethod(attrgetter("values"))


@dataclass(frozen=True, eq=False)
class Export(Node):
    """Hands a value to a later part of a program with blocks, under ``slot``."""

    CHILDREN: ClassVar = ("x",)
    x: Node
    slot: str

    def infer(self) -> Type:
        return OUTPUT


@dataclass(frozen=True, eq=False)
class Result(Node):
    """An output the Python API asks for: the value is handed back instead of saved or printed."""

    CHILDREN: ClassVar = ("x",)
    x: Node
    label: str = "result"

    def infer(self) -> Type:
        return OUTPUT


OUTPUT_NODES = (Save, Print, Message, Result, Export)
PRODUCT_NODES = (MatMul, Gemm)
