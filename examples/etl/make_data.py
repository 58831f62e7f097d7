"""Writes the ETL example's inputs: a ratings table in coordinate Parquet form (user i,
item j, rating v) and item features in row form.

    python examples/etl/make_data.py [--users 2000] [--items 500] [--ratings 50000] [--features 32]

The ratings follow power laws, as real ones do: a few items are rated by many users and
most by few (Zipf, exponent 0.8), and user activity is skewed too (exponent 0.6). Each
(user, item) pair is rated at most once. Written in row groups, so a table of tens of
millions of ratings never has to be in memory as one piece.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
CHUNK = 5_000_000  # ratings per row group


def _zipf_sampler(n: int, exponent: float, rng: np.random.Generator):
    """Draws of 0..n-1 with probability proportional to (rank + 1) ** -exponent, ranks shuffled
    so that popular ids are spread over the range."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    ids = rng.permutation(n)

    def draw(size: int) -> np.ndarray:
        return ids[np.minimum(np.searchsorted(cumulative, rng.random(size)), n - 1)]
    return draw


def ratings_table(users: int, items: int, count: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct (user, item) pairs with power-law marginals, sorted by user then item."""
    if count > users * items // 2:
        raise SystemExit(f"--ratings {count} is over half of the {users * items} user-item pairs")
    rng = np.random.default_rng(seed)
    user, item = _zipf_sampler(users, 0.6, rng), _zipf_sampler(items, 0.8, rng)
    pairs = np.empty(0, dtype=np.int64)
    while pairs.size < count:  # duplicates of popular pairs are dropped, then topped up
        want = int((count - pairs.size) * 1.2) + 16
        fresh = user(want).astype(np.int64) * items + item(want)
        pairs = np.unique(np.concatenate([pairs, fresh]))
    pairs = np.sort(rng.choice(pairs, size=count, replace=False))
    return np.divmod(pairs, items)


def write_data(users: int, items: int, count: int, features: int, out: Path) -> None:
    """ratings.parquet (coordinate form, sorted by user then item) and item_features.parquet (rows)."""
    rng = np.random.default_rng(7)
    out.mkdir(parents=True, exist_ok=True)
    user_ids, item_ids = ratings_table(users, items, count)
    schema = pa.schema([("i", pa.int64()), ("j", pa.int64()), ("v", pa.float64())],
                       metadata={b"jampi.shape": f"{users},{items}".encode()})
    with pq.ParquetWriter(out / "ratings.parquet", schema) as writer:
        for start in range(0, count, CHUNK):
            stop = min(count, start + CHUNK)
            stars = rng.integers(1, 6, size=stop - start).astype(np.float64)
            writer.write_table(pa.table({"i": user_ids[start:stop], "j": item_ids[start:stop], "v": stars},
                                        schema=schema))
    values = rng.standard_normal((items, features))
    offsets = pa.array(np.arange(0, values.size + 1, features, dtype=np.int32))
    rows = pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))
    pq.write_table(pa.table({"i": np.arange(items, dtype=np.int64), "row": rows}), out / "item_features.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--ratings", type=int, default=None, help="default: 5%% of the user-item pairs")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    count = args.ratings if args.ratings is not None else args.users * args.items // 20
    write_data(args.users, args.items, count, args.features, args.out)
    print(f"wrote {count} ratings ({args.users} users x {args.items} items) and "
          f"{args.items} x {args.features} item features to {args.out}")


if __name__ == "__main__":
    main()
