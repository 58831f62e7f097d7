"""Hundreds of generated programs: jampi (parse → rewrite → plan → local executor)
must agree with a direct NumPy evaluation of the same statements."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

import jampi_dsl
from tests.programs import assert_close, programs

SESSION = jampi_dsl.session(executor="local")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_generated_programs_match_numpy(prog):
    values = SESSION.run_text(prog.text)
    dtype = "float32" if 'dtype="float32"' in prog.text else "float64"
    for name in prog.printed:
        assert name in values, f"{name} was not printed\n{prog.text}"
        assert_close(values[name], prog.env[name], dtype, context=f"{name} in\n{prog.text}")
        expected = prog.env[name]
        if hasattr(expected, "dtype"):
            assert values[name].dtype == expected.dtype, f"{name}: dtype {values[name].dtype} != {expected.dtype}"
