"""Writes the ETL example's inputs: a sparse interaction table in coordinate
Parquet form (user i, item j, rating v) and item features in row form.

    python examples/etl/make_data.py [--users 2000] [--items 500] [--features 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    args.out.mkdir(parents=True, exist_ok=True)

    # About 5% of user-item pairs have a rating; the rest are missing (zero in coordinate form).
    count = args.users * args.items // 20
    linear = rng.choice(args.users * args.items, size=count, replace=False)
    users, items = np.divmod(linear, args.items)
    ratings = rng.integers(1, 6, size=count).astype(np.float64)
    table = pa.table({"i": users.astype(np.int64), "j": items.astype(np.int64), "v": ratings})
    pq.write_table(table, args.out / "ratings.parquet")

    features = rng.standard_normal((args.items, args.features))
    offsets = pa.array(np.arange(0, features.size + 1, args.features, dtype=np.int32))
    rows = pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1)))
    pq.write_table(pa.table({"i": np.arange(args.items, dtype=np.int64), "row": rows}),
                   args.out / "item_features.parquet")
    print(f"wrote {count} ratings ({args.users} users x {args.items} items) and "
          f"{args.items} x {args.features} item features to {args.out}")


if __name__ == "__main__":
    main()
