"""The parser's fast LALR loop builds exactly what lark's own parser builds.

``parse`` drives lark's table with its own loop (see ``_FastLALR``) and falls
back to lark only for a syntax error; these tests hold the two side by side on
real programs, on generated ones and on mutated (mostly broken) texts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings

from benchmarks.plan_10k import generate
from jampi_dsl.errors import JampiError, Source
from jampi_dsl.grammar import parser as P
from tests.test_errors import mutated_programs

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted(ROOT.glob("examples/*.lin")) + sorted(
    (ROOT / "tests" / "fixtures").rglob("*.lin")
)


def _both(text: str):
    """(fast result, lark result); a syntax error is None, an error from a rule its message."""
    body = text if text.endswith("\n") else text + "\n"
    results = []
    for run in (P._fast().parse, P._lark().parse):
        P._TRANSFORMER.source = Source("t.lin", text)
        try:
            results.append(run(body))
        except P.UnexpectedInput:
            results.append(None)
        except P.VisitError as err:
            results.append(("error", str(err.orig_exc)))
        except JampiError as err:
            results.append(("error", str(err)))
    return results


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: str(p.relative_to(ROOT)))
def test_real_programs(path):
    fast, lark = _both(path.read_text())
    assert fast is not None and fast == lark


def test_generated_program_with_every_construct():
    text = (
        generate(600, 8)
        + 'P = f(a, b=2, c=(1, 2),)\nparam s = "x"\nparam t = -3\nparam u = true\nprint(-(x).T)\n'
    )
    fast, lark = _both(text)
    assert fast is not None and len(fast) > 600 and fast == lark


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "\\\n", "\\"])
def test_programs_without_statements(text):
    fast, lark = _both(text)  # the empty `program` rule reduces nothing off the stacks
    assert fast == lark == ()


def test_rule_errors_come_through_unchanged():
    fast, lark = _both("X = f(a=1, 2)\n")  # positional after keyword: raised by a reduce callback
    assert fast == lark and fast[0] == "error" and "positional argument" in fast[1]


@settings(max_examples=300, deadline=None)
@given(mutated_programs())
def test_mutated_texts(text):
    fast, lark = _both(text)
    if fast is None:  # the fast loop gives up on any syntax error; lark must reject it too
        assert lark is None
    else:
        assert fast == lark
