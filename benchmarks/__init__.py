"""jampi's benchmark suite (``python -m benchmarks``) and the older single-purpose scripts.

See ``run.py`` for the suite, ``model.py`` for the time and memory model, and BENCHMARKS.md
for the results.
"""
