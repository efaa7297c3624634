"""SQLite or DuckDB for the review's cache: the same reads the report does, timed in both.

    PYTHONPATH=<dir with duckdb> python scripts/benchlib/review_engines.py CACHE_DIR

Reads the SQLite cache `scripts/bench review` left (CACHE_DIR/index.sqlite), copies its clips and docks into
an in-memory DuckDB (through CSV, not timed), then times, in each engine: the report's read of every clip
and dock into Python objects, and one analytical query (clips per camera and month). Prints JSON.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import duckdb

# the report's read (dockd.agency.review.index.Cache.clips_between over the whole year)
Q_CLIPS = ("SELECT camera, start_ns - coalesce(offset_ns, 0) AS s, duration_ns, object_key FROM clips "
           "WHERE start_ns IS NOT NULL AND duration_ns IS NOT NULL ORDER BY camera, s")
Q_DOCKS = "SELECT camera, at_ns, anomalies FROM docks ORDER BY camera, at_ns"
Q_AGG = ("SELECT camera, start_ns {div} 2592000000000000 AS m, count(*), sum(duration_ns) FROM clips "
         "GROUP BY camera, m")  # integer division: / in SQLite, // in DuckDB


def timed(fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    return round(time.perf_counter() - t0, 3), n


def main() -> int:
    cache = Path(sys.argv[1]) / "index.sqlite"
    lite = sqlite3.connect(cache)
    duck = duckdb.connect()
    with tempfile.TemporaryDirectory() as td:
        for table, cols in (("clips", "camera, start_ns, duration_ns, offset_ns, object_key"),
                            ("docks", "camera, at_ns, anomalies")):
            p = Path(td) / f"{table}.csv"
            with open(p, "w", newline="") as f:
                csv.writer(f).writerows(lite.execute(f"SELECT {cols} FROM {table}"))
            names = [c.strip() for c in cols.split(",")]
            types = {"camera": "VARCHAR", "object_key": "VARCHAR", "anomalies": "VARCHAR"}
            col_types = ", ".join(f"'{n}': '{types.get(n, 'BIGINT')}'" for n in names)
            duck.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv('{p}', header=false, "
                         f"columns={{{col_types}}})")
    out = {}
    for name, con in (("sqlite", lite), ("duckdb", duck)):
        out[name] = {
            "read_clips_s": timed(lambda c=con: len(c.execute(Q_CLIPS).fetchall()))[0],
            "read_docks_s": timed(lambda c=con: len(c.execute(Q_DOCKS).fetchall()))[0],
            "agg_s": timed(lambda c=con, n=name: len(c.execute(Q_AGG.format(div="/" if n == "sqlite" else "//"))
                                                       .fetchall()))[0],
        }
    out["clips"] = lite.execute("SELECT count(*) FROM clips").fetchone()[0]
    out["duckdb_version"] = duckdb.__version__
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
