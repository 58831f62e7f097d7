"""DataFrame → jampi → DataFrame without files, in both forms and both dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.errors import InputError


@pytest.mark.parametrize("method", ["local", "cannon"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dataframe_round_trip(spark, method, dtype):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 30)).astype(dtype)
    a[3] = 0
    a[-2:] = 0  # empty rows, at the end too: shape must be given or come from the metadata
    js = jampi_dsl.session(executor=method)
    coordinate = js.matrix(a).to_spark()
    assert set(coordinate.columns) == {"i", "j", "v"} and coordinate.count() == np.count_nonzero(a)
    rows = js.matrix(a).to_spark(form="rows")
    assert rows.count() == 40
    A = js.from_spark(coordinate, shape=(40, 30))
    R = js.from_spark(rows, form="rows")
    assert A.dtype == np.dtype(dtype) and R.shape == (40, 30)
    result = (A.T @ R).to_spark(form="rows")
    back = js.from_spark(result, form="rows").to_numpy()
    rtol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(back, a.T @ a, rtol=rtol, atol=rtol * np.abs(a.T @ a).max())


def test_dataframe_errors(spark):
    js = jampi_dsl.session(executor="local")
    with pytest.raises(InputError, match="needs i, j, v"):
        js.from_spark(spark.createDataFrame([(1, 2)], ["x", "y"]))
    dup = spark.createDataFrame([(0, 0, 1.0), (0, 0, 2.0)], ["i", "j", "v"])
    with pytest.raises(InputError, match="duplicate entry"):
        js.from_spark(dup).to_numpy()
    with pytest.raises(InputError, match="must be numeric"):
        js.from_spark(spark.createDataFrame([(0, 0, "a")], ["i", "j", "v"]))
