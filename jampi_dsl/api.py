"""The embedded Python API, and the compile pipeline the CLI shares with it.

Matrices are lazy: operators build IR nodes (checking shapes at once, so a
mistake raises where it is written) and nothing runs until ``to_numpy``,
``save`` or ``value`` asks for a result.
"""

from __future__ import annotations

import os
import weakref
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as scipy_sparse

from . import ops, sparse
from .errors import InputError, ResolveError
from .executors.base import RunContext
from .executors.flow import execute
from .executors.runner import RunResult
from .gcpause import paused_gc
from .grammar.parser import parse, parse_file
from .planner import explain as explain_mod
from .planner import ir
from .planner.build import ParamValue, build
from .planner.cost import Resources
from .planner.flow import FlowProgram, lower_flow
from .planner.graph import Program
from .planner.inputs import inspect_input
from .planner.linalg import FUNCTIONS as LINALG
from .planner.linalg import Sketch
from .planner.passes import optimize
from .planner.passes._common import reachable
from .planner.physical import PhysicalPlan, lower

# ---------------------------------------------------------------- the pipeline


def _is_local_master(master: str | None) -> bool:
    return master is None or master.startswith("local")


def spark_is_active() -> bool:
    import sys

    if "pyspark" not in sys.modules:  # nothing can be running: don't pay for importing pyspark
        return False
    from pyspark.sql import SparkSession

    from .spark_internals import active_context

    return SparkSession.getActiveSession() is not None or active_context() is not None


def resources_for(master: str | None, conf: dict[str, str] | None, *, start: bool = False) -> Resources:
    """What the planner may use. A local master is sized without starting Spark; a cluster
    (or a session that is already running, e.g. under spark-submit) is asked."""
    if not start and _is_local_master(master) and not spark_is_active():
        return Resources.for_master(master, conf)
    from .cluster import resources_from_spark
    from .session import spark_for_plans

    return resources_from_spark(spark_for_plans(master, conf)).with_conf(conf)


def plan_program(program: Program, resources: Resources | None = None, executor: str = "auto",
                 forced_by: str | None = None) -> PhysicalPlan:
    """Rewrite, then lower: the typed DAG → the physical plan (GC paused: see jampi_dsl.gcpause)."""
    with paused_gc():
        if isinstance(program, FlowProgram):  # loops or branches: every segment planned once
            return lower_flow(program, optimize, resources or Resources.local_only(), executor, forced_by)
        return lower(optimize(program), resources, executor, forced_by)


def build_source(text: str, name: str, overrides: dict[str, ParamValue] | None = None, base_dir=None) -> Program:
    return build(parse(text, name), overrides, base_dir)


def build_file(path: str | os.PathLike, overrides: dict[str, ParamValue] | None = None) -> Program:
    return build(parse_file(path), overrides)


def plan_source(text: str, name: str, overrides: dict[str, ParamValue] | None = None,
                resources: Resources | None = None, executor: str = "auto", base_dir=None,
                forced_by: str | None = None) -> PhysicalPlan:
    """Text → physical plan: the whole front half, with the garbage collector paused once
    for all of it (between phases it would rescan the AST and the DAG for nothing)."""
    with paused_gc():
        return plan_program(build_source(text, name, overrides, base_dir), resources, executor, forced_by)


def plan_file(path: str | os.PathLike, overrides: dict[str, ParamValue] | None = None,
              resources: Resources | None = None, executor: str = "auto", forced_by: str | None = None) -> PhysicalPlan:
    """:func:`plan_source` for a ``.lin`` file."""
    with paused_gc():
        return plan_program(build_file(path, overrides), resources, executor, forced_by)


def _param_values(params: dict[str, Any] | None) -> dict[str, ParamValue]:
    out = {}
    for name, value in (params or {}).items():
        if isinstance(value, (bool, str)):
            out[name] = ParamValue(value)
        elif isinstance(value, Real):
            out[name] = ParamValue(float(value))
        else:
            raise ResolveError(f"parameter {name!r} must be a number, a string or a bool, got {type(value).__name__}")
    return out


# ---------------------------------------------------------------- lazy values


def _node_of(value: Any) -> ir.Node:
    if isinstance(value, (Matrix, Scalar)):
        return value.node
    if isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_)):
        return ir.Const(float(value))
    if isinstance(value, np.ndarray) or scipy_sparse.issparse(value):
        return _literal(value)
    raise TypeError(f"cannot use a {type(value).__name__} in a jampi expression")


def _literal(array) -> ir.Literal:
    if scipy_sparse.issparse(array):  # kept sparse, as a CSR array
        if array.ndim != 2:
            raise ResolveError(f"jampi matrices are 2-D, got a sparse array with {array.ndim} dimensions")
        dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float64
        return ir.Literal(scipy_sparse.csr_array(array, dtype=dtype))
    if array.ndim != 2:
        raise ResolveError(f"jampi matrices are 2-D, got an array with {array.ndim} dimensions")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    return ir.Literal(array)


class _Lazy:
    __array_ufunc__ = None  # make NumPy scalars defer to our reflected operators

    def __init__(self, session: Session, node: ir.Node):
        self.session = session
        self.node = node
        self._computed_from: ir.Node | None = None  # the expression, once node is its kept value
        session._live[id(self)] = self

    def _wrap(self, node: ir.Node):
        return (Matrix if node.type.is_matrix else Scalar)(self.session, node)

    def _binary(self, op: str, other: Any, reflected: bool = False):
        try:
            other_node = _node_of(other)
        except TypeError:
            return NotImplemented
        a, b = (other_node, self.node) if reflected else (self.node, other_node)
        if op == "@":
            return self._wrap(ir.MatMul(a, b))
        return self._wrap(ir.Binary(op, a, b))

    def __add__(self, other):
        return self._binary("+", other)

    def __radd__(self, other):
        return self._binary("+", other, True)

    def __sub__(self, other):
        return self._binary("-", other)

    def __rsub__(self, other):
        return self._binary("-", other, True)

    def __mul__(self, other):
        return self._binary("*", other)

    def __rmul__(self, other):
        return self._binary("*", other, True)

    def __truediv__(self, other):
        return self._binary("/", other)

    def __rtruediv__(self, other):
        return self._binary("/", other, True)

    def __neg__(self):
        return self._wrap(ir.Unary("neg", self.node))

    def _unary(self, name: str):
        return self._wrap(ir.Unary(name, self.node))

    def __abs__(self):
        return self._unary("abs")

    def __pow__(self, other):
        return self._binary("**", other)

    def __rpow__(self, other):
        return self._binary("**", other, True)

    def explain(self, format: str = "text") -> str:
        return self.session.explain(self, format=format)

    def persist(self):
        """Compute this value now and keep it (on the driver) for every later expression."""
        self.session.compute(self, keep_always=True)
        return self

    def unpersist(self):
        """Forget the kept value: later expressions compute it again."""
        if self._computed_from is not None:
            self.node, self._computed_from = self._computed_from, None
        self.session._kept.pop(self.node.uid, None)
        return self


class Matrix(_Lazy):
    """A lazy matrix expression."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.node.type.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.node.type.dtype)

    @property
    def T(self) -> Matrix:  # noqa: N802 - NumPy's spelling
        return Matrix(self.session, ir.Transpose(self.node))

    def __matmul__(self, other):
        return self._binary("@", other)

    def __rmatmul__(self, other):
        return self._binary("@", other, True)

    def _reduce(self, name: str, axis: int | None = None):
        return self._wrap(ir.Reduce(name, self.node, axis=axis))

    def sum(self, axis: int | None = None):
        """A lazy scalar, or along ``axis`` (0: a 1xc row, 1: an rx1 column)."""
        return self._reduce("sum", axis)

    def mean(self, axis: int | None = None):
        return self._reduce("mean", axis)

    def max(self, axis: int | None = None):
        return self._reduce("max", axis)

    def min(self, axis: int | None = None):
        return self._reduce("min", axis)

    def argmax(self, axis: int):
        return self._reduce("argmax", axis)

    def argmin(self, axis: int):
        return self._reduce("argmin", axis)

    def trace(self) -> Scalar:
        return self._reduce("trace")

    def norm(self) -> Scalar:
        return self._reduce("norm")

    # Elementwise comparisons give lazy 1.0/0.0 matrices. == and != stay Python's identity
    # tests (lazy values are kept in sets); eq() and ne() are the elementwise ones.
    def __lt__(self, other):
        return self._binary("<", other)

    def __le__(self, other):
        return self._binary("<=", other)

    def __gt__(self, other):
        return self._binary(">", other)

    def __ge__(self, other):
        return self._binary(">=", other)

    def eq(self, other):
        return self._binary("==", other)

    def ne(self, other):
        return self._binary("!=", other)

    # linear algebra, with LAPACK on the driver (jampi_dsl.planner.linalg)
    def _factor(self, name: str, k: int | None = None, sketch: Sketch | None = None):
        parts = len(LINALG[name].parts)
        out = tuple(Matrix(self.session, ir.Factor(name, self.node, part=i, k=k, sketch=sketch)) for i in range(parts))
        return out if parts > 1 else out[0]

    def inv(self):
        return self._factor("inv")

    def cholesky(self):
        """The lower Cholesky factor of a symmetric positive definite matrix."""
        return self._factor("cholesky")

    def qr(self):
        """``(Q, R)``, the reduced QR factorisation of a tall matrix."""
        return self._factor("qr")

    def svd(self, k: int | None = None, *, oversample: int | None = None, iters: int | None = None,
            seed: int | None = None):
        """``(U, s, Vt)``: the thin SVD, or its leading ``k`` triplets; ``s`` is a column. With ``k``
        of a wide or large matrix it is randomized: ``oversample`` extra sketch columns (10),
        ``iters`` power iterations (4), the test matrix drawn from ``seed`` (0)."""
        given = {n: v for n, v in (("oversample", oversample), ("iters", iters), ("seed", seed)) if v is not None}
        if given and k is None:
            raise ResolveError(f"{next(iter(given))}= tunes the randomized svd(k=...): give k too")
        for name, value in given.items():
            if int(value) != value or value < 0:
                raise ResolveError(f"{name} must be a whole number at least 0, got {value}")
        return self._factor("svd", k, Sketch(**{n: int(v) for n, v in given.items()}) if given else None)

    def eigh(self):
        """``(w, V)``: eigenvalues (a column, ascending) and eigenvectors of a symmetric matrix."""
        return self._factor("eigh")

    def diag(self):
        return self._factor("diag")

    def _region(self, key) -> tuple[ir.Node, ir.Node, int, int, bool]:
        """(row start, column start, rows, cols, single entry?) of ``X[r, c]`` as NumPy reads it."""
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError("index a jampi matrix with two subscripts: X[r, c] (X[i, :] is a 1xc row)")
        starts, sizes, singles = [], [], []
        for sub, extent in zip(key, self.shape, strict=True):
            if isinstance(sub, slice):
                if sub.step not in (None, 1):
                    raise ResolveError("slices take no step")
                start, stop, _ = sub.indices(extent)
                if stop <= start:
                    raise ResolveError(f"the slice {start}:{stop} is empty")
                starts.append(ir.Const(float(start)))
                sizes.append(stop - start)
                singles.append(False)
            elif isinstance(sub, Scalar):  # a lazy index: checked when it runs
                starts.append(sub.node)
                sizes.append(1)
                singles.append(True)
            else:
                index = int(sub)
                if not -extent <= index < extent:
                    raise IndexError(f"index {index} is out of range for {extent}")
                starts.append(ir.Const(float(index % extent)))
                sizes.append(1)
                singles.append(True)
        return starts[0], starts[1], sizes[0], sizes[1], singles[0] and singles[1]

    def __getitem__(self, key):
        """``X[0:3, :]``, ``X[:, j]`` (an rx1 column), ``X[i, j]`` (a lazy scalar), as in NumPy."""
        i, j, rows, cols, single = self._region(key)
        return self._wrap(ir.Index(self.node, i, j, rows, cols, scalar=single))

    @property
    def at(self) -> _At:
        """``X.at[0, :].set(v)``: a new matrix with that region replaced (X itself is unchanged)."""
        return _At(self)

    @property
    def nrow(self) -> int:
        return self.shape[0]

    @property
    def ncol(self) -> int:
        return self.shape[1]

    @property
    def storage(self) -> str:
        """"dense" or "sparse": how the plan stores this value (never changes a value)."""
        return self.node.type.storage

    def nnz(self) -> Scalar:
        """The number of stored non-zeros (lazy)."""
        return self._reduce("nnz")

    def to_numpy(self) -> np.ndarray:
        """The values as a dense NumPy array (a sparse value is densified: see ``to_scipy``)."""
        return sparse.dense(self.session.compute(self)[0])

    def to_scipy(self):
        """The values as a SciPy CSR array (a dense value is converted)."""
        return sparse.conform(self.session.compute(self)[0], "sparse", self.node.type.dtype)

    def __array__(self, dtype=None, copy=None):
        array = self.to_numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def save(self, path: str | os.PathLike, format: str | None = None) -> None:
        self.session.save(self, path, format=format)

    def to_spark(self, form: str = "coordinate"):
        """A Spark DataFrame of this matrix: coordinate form (i, j, v; non-zero entries) or row form (i, row)."""
        from .executors.formats import matrix_to_table

        if form not in ("coordinate", "rows"):
            raise ResolveError(f'form must be "coordinate" or "rows", got {form!r}')
        value = self.session.compute(self)[0]  # a sparse value stays sparse: its non-zeros only
        return self.session.spark().createDataFrame(matrix_to_table(value, form))

    def __repr__(self) -> str:
        return f"<jampi Matrix {self.shape[0]}x{self.shape[1]} {self.node.type.dtype}: {self.node.op}>"


class _At:
    def __init__(self, matrix: Matrix):
        self.matrix = matrix

    def __getitem__(self, key) -> _Region:
        return _Region(self.matrix, key)


class _Region:
    def __init__(self, matrix: Matrix, key):
        self.matrix, self.key = matrix, key

    def set(self, value) -> Matrix:
        i, j, rows, cols, _ = self.matrix._region(self.key)
        return self.matrix._wrap(ir.Update(self.matrix.node, _node_of(value), i, j, rows, cols))


class Scalar(_Lazy):
    """A lazy scalar (a reduction, or arithmetic on reductions)."""

    def value(self) -> float:
        return float(self.session.compute(self)[0])

    def __float__(self) -> float:
        return self.value()

    def __round__(self, ndigits: int | None = None):
        return round(self.value(), ndigits)

    def __format__(self, spec: str) -> str:
        return format(self.value(), spec)

    def __eq__(self, other):
        return self.value() == float(other)

    def __ne__(self, other):
        return self.value() != float(other)

    __hash__ = object.__hash__  # lazy values are kept by identity

    def __bool__(self) -> bool:
        return bool(self.value())

    # Comparisons of a lazy scalar compute it: they decide Python control flow.
    def __lt__(self, other):
        return self.value() < float(other)

    def __le__(self, other):
        return self.value() <= float(other)

    def __gt__(self, other):
        return self.value() > float(other)

    def __ge__(self, other):
        return self.value() >= float(other)

    def __repr__(self) -> str:
        return f"<jampi Scalar: {self.node.op}>"


def _unary_method(name: str):
    def method(self):
        return self._unary(name)

    method.__name__ = name
    method.__doc__ = f"Elementwise {name} (lazy)."
    return method


for _op in ops.ELEMENTWISE.values():  # every unary function of the ops table is a method
    if _op.api and _op.arity == 1 and not hasattr(_Lazy, _op.api):
        setattr(_Lazy, _op.api, _unary_method(_op.name))


# ---------------------------------------------------------------- values kept across runs

KEEP_MAX_BYTES = 256 * 2**20  # larger values are not pulled to the driver to be kept


def worth_keeping(node: ir.Node, limit: int | None) -> bool:
    """A computed node is kept when recomputing it costs more than holding it: not a leaf,
    and (unless asked for) small enough to hold on the driver."""
    if isinstance(node, (ir.Literal, ir.Const, ir.Generate, ir.Load, ir.Frame)):
        return False
    return limit is None or node.type.is_scalar or node.type.nbytes <= limit


def leaf_for(value: Any) -> ir.Node:
    is_matrix = isinstance(value, np.ndarray) or scipy_sparse.issparse(value)
    return ir.Literal(value) if is_matrix else ir.Const(float(value))


def kept_reachable(kept: dict[int, ir.Node], roots) -> dict[int, ir.Node]:
    """The kept values some live expression still reads (a walk that stops at kept nodes)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.uid in seen:
            continue
        seen.add(node.uid)
        if node.uid not in kept:
            stack.extend(node.children)
    return {uid: leaf for uid, leaf in kept.items() if uid in seen}


def substitute(roots, kept: dict[int, ir.Node]) -> dict[int, ir.Node]:
    """Every node reachable from ``roots``, rebuilt over the kept values (uid -> new node);
    iterative, so a long expression cannot exhaust Python's stack."""
    new: dict[int, ir.Node] = {}
    stack = [(node, False) for node in roots]
    while stack:
        node, expanded = stack.pop()
        if node.uid in new:
            continue
        if node.uid in kept:
            new[node.uid] = kept[node.uid]
        elif expanded:
            new[node.uid] = node.with_children(tuple(new[c.uid] for c in node.children))
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in node.children if c.uid not in new)
    return new


# ---------------------------------------------------------------- the session


class Session:
    """Entry point of the embedded API: makes lazy matrices and runs programs."""

    def __init__(self, master: str | None = None, conf: dict[str, str] | None = None, executor: str = "auto"):
        self.master = master
        self.conf = dict(conf or {})
        self.executor = executor
        self._resources: Resources | None = None
        self._ctx_options: dict[str, Any] = {}
        # every lazy value handed out, by id (a WeakSet would compare them with ==)
        self._live: weakref.WeakValueDictionary[int, _Lazy] = weakref.WeakValueDictionary()
        # node uid -> a leaf holding the value computed for it: later expressions read it
        # instead of running that node's history again
        self._kept: dict[int, ir.Node] = {}

    @property
    def _forced_by(self) -> str:
        return f"session(executor={self.executor!r})"

    # resources: what the planner may use; Spark is started only when a plan needs it
    @property
    def resources(self) -> Resources:
        if self._resources is None:
            self._resources = resources_for(self.master, self.conf)
        return self._resources

    # constructors
    def matrix(self, array) -> Matrix:
        """A lazy matrix of ``array``'s values now (copied: changing the array later changes nothing).
        A SciPy sparse matrix or array stays sparse."""
        if scipy_sparse.issparse(array):
            return Matrix(self, _literal(array.copy()))
        return Matrix(self, _literal(np.array(array, copy=True)))

    def sparse(self, x) -> Matrix:
        """``x`` stored sparse (CSR); the values do not change."""
        return self._store(x, "sparse")

    def dense(self, x) -> Matrix:
        """``x`` stored dense; the values do not change."""
        return self._store(x, "dense")

    def _store(self, x, storage: str) -> Matrix:
        node = _node_of(x)
        return Matrix(self, node if node.type.is_matrix and node.type.storage == storage else ir.Store(node, storage))

    def nnz(self, x) -> Scalar:
        return Scalar(self, ir.Reduce("nnz", _node_of(x)))

    def _generate(self, kind: str, r: int, c: int, seed: int, dtype: str, density: float | None = None) -> Matrix:
        if dtype not in ir.FLOAT_DTYPES:
            raise ResolveError(f'dtype must be "float64" or "float32", got {dtype!r}')
        for what, value in (("rows", r), ("cols", c), ("seed", seed)):
            if int(value) != value:
                raise ResolveError(f"{what} must be a whole number, got {value}")
        if density is not None and not 0 < density <= 1:
            raise ResolveError(f"density must be above 0 and at most 1, got {density}")
        return Matrix(self, ir.Generate(kind, (int(r), int(c)), dtype, int(seed),
                                        None if density is None else float(density)))

    def random(self, r: int, c: int, seed: int = 0, dtype: str = "float64", density: float | None = None) -> Matrix:
        """Uniform in [0, 1); with ``density`` a sparse matrix with that share of non-zeros."""
        return self._generate("uniform", r, c, seed, dtype, density)

    def randn(self, r: int, c: int, seed: int = 0, dtype: str = "float64", density: float | None = None) -> Matrix:
        return self._generate("normal", r, c, seed, dtype, density)

    def zeros(self, r: int, c: int, dtype: str = "float64") -> Matrix:
        return self._generate("zeros", r, c, 0, dtype)

    def ones(self, r: int, c: int, dtype: str = "float64") -> Matrix:
        return self._generate("ones", r, c, 0, dtype)

    def eye(self, n: int, dtype: str = "float64") -> Matrix:
        return self._generate("eye", n, n, 0, dtype)

    def load(self, path: str | os.PathLike, format: str | None = None, dtype: str | None = None,
             sparse: bool | None = None) -> Matrix:
        """A matrix file; coordinate Parquet, ``.mtx`` and ``.npz`` are sparse unless ``sparse=False``."""
        full = str(Path(path).expanduser().resolve())
        info = inspect_input(full, format)
        stored = info.sparse if sparse is None else bool(sparse)
        entries = info.entries if info.entries is not None else info.shape[0] * info.shape[1]
        return Matrix(self, ir.Load(full, info.format, info.shape, dtype or info.dtype,
                                    (("finite", False), *sorted(info.options.items())),
                                    "sparse" if stored else "dense", entries if stored else None))

    def from_spark(self, df, form: str = "coordinate", shape: tuple[int, int] | None = None,
                   sparse: bool | None = None) -> Matrix:
        """A matrix from a DataFrame in coordinate form (i, j, v) or row form (i, row).

        Coordinate form is sparse unless ``sparse=False``. Without ``shape`` it is the largest
        index + 1; that and the entry count cost one small Spark job."""
        import pyspark.sql.functions as F
        from pyspark.sql import types as T

        columns = {"coordinate": ("i", "j", "v"), "rows": ("i", "row")}.get(form)
        if columns is None:
            raise ResolveError(f'form must be "coordinate" or "rows", got {form!r}')
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise InputError(f"the DataFrame has columns {df.columns}; {form} form needs {', '.join(columns)}")
        values = df.schema[columns[-1]].dataType
        element = values.elementType if isinstance(values, T.ArrayType) else values
        if not isinstance(element, T.NumericType):
            raise InputError(f"the DataFrame's {columns[-1]!r} column must be numeric, got {values.simpleString()}")
        dtype = "float32" if isinstance(element, T.FloatType) else "float64"
        stored = form == "coordinate" if sparse is None else bool(sparse)
        entries = None
        if form == "coordinate" and (shape is None or stored):
            row = df.agg(F.max("i"), F.max("j"), F.count(F.lit(1))).first()
            entries = int(row[2])
            if shape is None:
                shape = (int(row[0]) + 1, int(row[1]) + 1) if row[0] is not None else None
        elif shape is None:
            row = df.agg(F.max("i"), F.max(F.size("row"))).first()
            shape = (int(row[0]) + 1, int(row[1])) if row[0] is not None else None
        if shape is None:
            raise InputError("the DataFrame is empty; give shape=(rows, cols)")
        if stored and entries is None:
            entries = int(shape[0]) * int(shape[1])
        return Matrix(self, ir.Frame(df, form, (int(shape[0]), int(shape[1])), dtype,
                                     "sparse" if stored else "dense", entries if stored else None))

    def _elementwise(self, name: str, *args: Any):
        nodes = [_node_of(a) for a in args]
        node = ir.Where(*nodes) if name == "where" else ir.Binary(name, *nodes)
        return (Matrix if node.type.is_matrix else Scalar)(self, node)

    def where(self, c, a, b):
        """``a`` where ``c`` is non-zero, else ``b`` (lazy; all three broadcast)."""
        return self._elementwise("where", c, a, b)

    def solve(self, a, b):
        """``X`` with ``a @ X = b``."""
        return Matrix(self, ir.Solve("solve", _node_of(a), _node_of(b)))

    def lstsq(self, a, b):
        """The least-squares ``X`` (minimum norm when ``a`` is rank-deficient)."""
        return Matrix(self, ir.Solve("lstsq", _node_of(a), _node_of(b)))

    def hcat(self, *parts):
        """The matrices side by side."""
        return self._concat(1, parts)

    def vcat(self, *parts):
        """The matrices one on top of the other."""
        return self._concat(0, parts)

    def _concat(self, axis: int, parts):
        if not parts:
            raise ResolveError("hcat()/vcat() need at least one matrix")
        node = _node_of(parts[0])
        for part in parts[1:]:
            node = ir.Concat(axis, node, _node_of(part))
        return Matrix(self, node)

    def diag(self, x):
        return Matrix(self, ir.Factor("diag", _node_of(x)))

    def maximum(self, a, b):
        return self._elementwise("maximum", a, b)

    def minimum(self, a, b):
        return self._elementwise("minimum", a, b)

    # running
    def plan(self, outputs: list[ir.Node], name: str = "<api>") -> PhysicalPlan:
        return plan_program(Program(tuple(outputs), source_name=name), self.resources, self.executor,
                            self._forced_by)

    def spark(self):
        """The SparkSession this session's plans run on (started on first use)."""
        from .session import get_spark

        return get_spark(self.master, self.conf)

    def _spark_for_plans(self):
        from .session import spark_for_plans

        return spark_for_plans(self.master, self.conf)

    def run_plan(self, plan: PhysicalPlan, on_print=None) -> RunResult:
        ctx = RunContext(on_print=on_print, spark_factory=self._spark_for_plans, options=dict(self._ctx_options))
        return execute(plan, ctx)

    def compute(self, *values: _Lazy, keep_always: bool = False) -> list[Any]:
        """The values of ``values``; each computed node that a live lazy value stands for is
        kept, so a later expression over it does not run its history again."""
        results = self._run_keeping([v.node for v in values], lambda node, i: ir.Result(node, label=f"result{i}"),
                                    keep_always)
        return [results[f"result{i}"] for i in range(len(values))]

    def save(self, value: Matrix, path: str | os.PathLike, format: str | None = None) -> None:
        from .planner.outputs import output_format

        full = str(Path(path).expanduser().resolve())
        fmt = output_format(full, format, None, protected=(os.getcwd(),))
        self._run_keeping([value.node], lambda node, i: ir.Save(node, full, fmt))

    def _run_keeping(self, nodes: list[ir.Node], output, keep_always: bool = False) -> dict[str, Any]:
        wrappers = list(self._live.values())
        live = {lazy.node.uid: lazy.node for lazy in wrappers}
        self._kept = kept_reachable(self._kept, live.values())
        new = substitute(nodes + list(live.values()), self._kept)
        roots = [new[n.uid] for n in nodes]
        reached = reachable(roots)
        limit = KEEP_MAX_BYTES if not keep_always else None
        keep = [uid for uid, node in live.items()
                if uid not in self._kept and new[uid].uid in reached and worth_keeping(new[uid], limit)]
        outputs = [output(node, i) for i, node in enumerate(roots)]
        outputs += [ir.Result(new[uid], label=f"keep{uid}") for uid in keep]
        values = self.run_plan(self.plan(outputs)).values
        for uid in keep:
            # A copy: the array handed to the caller is theirs to change.
            value = values[f"keep{uid}"]
            if isinstance(value, np.ndarray) or scipy_sparse.issparse(value):
                value = value.copy()
            self._kept[uid] = leaf_for(value)
        for lazy in wrappers:  # a kept value stands for its expression from now on: its history can go
            leaf = self._kept.get(lazy.node.uid)
            if leaf is not None and lazy._computed_from is None:
                lazy._computed_from, lazy.node = lazy.node, leaf
        return values

    def explain(self, value: _Lazy, format: str = "text") -> str:
        """The plan of ``value``'s expression (also once it has been computed and kept)."""
        plan = self.plan([ir.Result(value._computed_from or value.node)])
        return {"text": explain_mod.to_text, "json": explain_mod.to_json, "dot": explain_mod.to_dot}[format](plan)

    def run_file(self, path: str | os.PathLike, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a .lin program; returns printed values by label and saved matrices by path."""
        plan = plan_file(path, _param_values(params), self.resources, self.executor, self._forced_by)
        return self.run_plan(plan).values

    def run_text(self, text: str, params: dict[str, Any] | None = None, name: str = "<string>") -> dict[str, Any]:
        plan = plan_source(text, name, _param_values(params), self.resources, self.executor, base_dir=os.getcwd(),
                           forced_by=self._forced_by)
        return self.run_plan(plan).values

    def close(self) -> None:
        """Stops the Spark session jampi started, if any (a reused one keeps running)."""
        import sys

        if "pyspark" in sys.modules:
            from .session import stop_spark

            stop_spark()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def session(master: str | None = None, conf: dict[str, str] | None = None, executor: str = "auto") -> Session:
    return Session(master, conf, executor)
