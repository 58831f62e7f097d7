"""A generator of random, well-typed .lin programs paired with a direct NumPy
evaluation of the same statements, for differential tests on every executor."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from jampi_dsl.executors.blockgen import generate

DIMS = (1, 2, 3, 5, 8)


@dataclass
class GeneratedProgram:
    lines: list[str] = field(default_factory=list)
    env: dict[str, np.ndarray | float] = field(default_factory=dict)
    printed: list[str] = field(default_factory=list)  # names printed, in order

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def matrices(self) -> list[str]:
        return [k for k, v in self.env.items() if isinstance(v, np.ndarray)]

    def scalars(self) -> list[str]:
        return [k for k, v in self.env.items() if not isinstance(v, np.ndarray)]

    def emit(self, name: str, text: str, value) -> None:
        self.lines.append(f"{name} = {text}")
        self.env[name] = value


def _leaf(draw, prog: GeneratedProgram, name: str, dims, dtype: str) -> None:
    kind = draw(st.sampled_from(["random", "randn", "ones", "eye", "zeros"]))
    r, c = draw(st.sampled_from(dims)), draw(st.sampled_from(dims))
    dt = '' if dtype == "float64" else ', dtype="float32"'
    if kind == "eye":
        prog.emit(name, f"eye({r}{dt})", generate("eye", (r, r), dtype))
        return
    if kind in ("ones", "zeros"):
        prog.emit(name, f"{kind}({r}, {c}{dt})", generate(kind, (r, c), dtype))
        return
    seed = draw(st.integers(0, 5))
    gen = "uniform" if kind == "random" else "normal"
    prog.emit(name, f"{kind}({r}, {c}, seed={seed}{dt})", generate(gen, (r, c), dtype, seed=seed))


def _pick(draw, names):
    return draw(st.sampled_from(sorted(names)))


def _statement(draw, prog: GeneratedProgram, name: str, dims, dtype: str) -> None:
    env = prog.env
    mats = prog.matrices()
    choice = draw(st.sampled_from(["leaf", "matmul", "chain", "elementwise", "scale", "unary", "reduce", "mix", "gemm"]))
    if choice == "leaf" or not mats:
        return _leaf(draw, prog, name, dims, dtype)
    a = _pick(draw, mats)
    A = env[a]
    if choice in ("matmul", "gemm"):
        trans_a = draw(st.booleans())
        left, left_text = (A.T, f"{a}.T") if trans_a else (A, a)
        k = left.shape[1]
        partners = [(m, False) for m in mats if env[m].shape[0] == k] + [(m, True) for m in mats if env[m].shape[1] == k]
        if not partners:
            return _leaf(draw, prog, name, dims, dtype)
        b, trans_b = draw(st.sampled_from(partners))
        right, right_text = (env[b].T, f"{b}.T") if trans_b else (env[b], b)
        product = left @ right
        if choice == "gemm":
            addends = [m for m in mats if env[m].shape == product.shape]
            if addends:
                c = _pick(draw, addends)
                alpha = draw(st.sampled_from([1.0, 0.5, -2.0]))
                sign = draw(st.sampled_from(["+", "-"]))
                value = alpha * product + env[c] if sign == "+" else alpha * product - env[c]
                prog.emit(name, f"{alpha!r} * ({left_text} @ {right_text}) {sign} {c}", value)
                return None
        prog.emit(name, f"{left_text} @ {right_text}", product)
        return None
    if choice == "chain":
        seq, texts, cur = [A], [a], A
        for _ in range(draw(st.integers(2, 3))):
            nxt = [m for m in mats if env[m].shape[0] == cur.shape[1]]
            if not nxt:
                break
            m = _pick(draw, nxt)
            seq.append(env[m])
            texts.append(m)
            cur = cur @ env[m]
        prog.emit(name, " @ ".join(texts), cur)
        return None
    if choice == "elementwise":
        same = [m for m in mats if env[m].shape == A.shape]
        b = _pick(draw, same)
        op = draw(st.sampled_from(["+", "-", "*", "/"]))
        if op == "/":
            prog.emit(name, f"{a} / (abs({b}) + 1)", A / (np.abs(env[b]) + 1))
        else:
            value = {"+": A + env[b], "-": A - env[b], "*": A * env[b]}[op]
            prog.emit(name, f"{a} {op} {b}", value)
        return None
    if choice == "scale":
        s = draw(st.sampled_from([2.5, 0.5, 3.0, 1.0, 0.0]))
        form = draw(st.sampled_from(["left", "right", "div", "neg", "transpose"]))
        if form == "left":
            prog.emit(name, f"{s!r} * {a}", s * A)
        elif form == "right":
            prog.emit(name, f"{a} * {s!r} + {a}", A * s + A)
        elif form == "div":
            prog.emit(name, f"{a} / 4", A / 4)
        elif form == "neg":
            prog.emit(name, f"-{a}.T", -A.T)
        else:
            prog.emit(name, f"({a}.T).T + {a}", A + A)
        return None
    if choice == "unary":
        fn = draw(st.sampled_from(["abs", "sqrt", "exp", "log"]))
        if fn == "abs":
            prog.emit(name, f"abs({a})", np.abs(A))
        elif fn == "sqrt":
            prog.emit(name, f"sqrt(abs({a}))", np.sqrt(np.abs(A)))
        elif fn == "exp":
            prog.emit(name, f"exp({a} * 0.1)", np.exp(A * 0.1))
        else:
            prog.emit(name, f"log(abs({a}) + 1)", np.log(np.abs(A) + 1))
        return None
    if choice == "reduce":
        fn = draw(st.sampled_from(["sum", "norm", "trace"]))
        if fn == "trace" and A.shape[0] != A.shape[1]:
            fn = "norm"
        value = {"sum": lambda x: float(x.sum()), "norm": lambda x: float(np.linalg.norm(x)),
                 "trace": lambda x: float(np.trace(x))}[fn](A)
        prog.emit(name, f"{fn}({a})", value)
        return None
    # mix: scalars with matrices
    scalars = prog.scalars()
    if not scalars:
        prog.emit(name, f"norm({a}) + 1", float(np.linalg.norm(A)) + 1)
        return None
    s = _pick(draw, scalars)
    prog.emit(name, f"{a} / (abs({s}) + 1) - {s}", A / (abs(env[s]) + 1) - env[s])
    return None


@st.composite
def programs(draw, max_statements: int = 8, dtype: str | None = None) -> GeneratedProgram:
    dtype = dtype or draw(st.sampled_from(["float64", "float64", "float32"]))
    prog = GeneratedProgram()
    n = draw(st.integers(2, max_statements))
    for i in range(n):
        _statement(draw, prog, f"V{i}", DIMS, dtype)
    names = list(prog.env)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    for name in chosen:
        prog.lines.append(f"print({name})")
        prog.printed.append(name)
    return prog


def assert_close(actual, expected, dtype: str, context: str = "") -> None:
    rtol = 1e-10 if dtype == "float64" else 1e-4
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{context}: shape {actual.shape} != {expected.shape}"
    both_inf = np.isinf(actual) & np.isinf(expected) & (np.sign(actual) == np.sign(expected))
    both_nan = np.isnan(actual) & np.isnan(expected)
    ok = both_inf | both_nan
    finite = ~ok
    scale = max(1.0, float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)))
    err = np.abs(actual[finite] - expected[finite])
    assert np.all(err <= rtol * scale), f"{context}: max abs error {err.max():.3g} (scale {scale:.3g})"
