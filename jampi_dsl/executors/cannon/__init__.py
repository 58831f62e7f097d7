"""Cannon's matrix product as a Spark barrier stage whose tasks exchange blocks peer to peer.

Public API: :func:`cannon_matmul` and :class:`CannonConfig`; the wire is in
:mod:`.channel`, the grid arithmetic in :mod:`.layout`. Names load lazily, so
a Spark task that imports :mod:`.task` does not pull in the driver side
(:mod:`.stage`, the DistMatrix type) and stays small in memory.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CannonConfig": ".layout",
    "FaultSpec": ".layout",
    "choose_grid": ".layout",
    "RawBlockSerializer": "..blockframes",
    "cannon_matmul": ".stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
