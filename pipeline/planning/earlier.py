"""What earlier runs concluded: their stats rows of this model, read as input rows, and the rule that
says whether an earlier row is about the version of an input listed now.

Two ways in: every row of the stats parts (:func:`read_stats`, one task per file), or only the row groups
whose key ranges meet some listing shards' (:func:`read_ranges`, through the parts' index,
:func:`pipeline.stats.stats_index`).
"""

from __future__ import annotations

import bisect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..rows import OK, STATS_SCHEMA
from ..stats import MAX_KEY, plan_key
from ..storage import StorageOptions, StoredObject, filesystem, split_protocol
from .columns import EARLIER, INPUT_SCHEMA, conform

# Rows written before versions were recorded vouch only for inputs last modified this long before them.
LEGACY_MARGIN = 3600.0
EARLIER_COLUMNS = ["input_uri", "output_uri", "status", "error", "input_bytes", "input_version", "finished_at"]
EARLIER_SCHEMA = pa.schema([STATS_SCHEMA.field(n) for n in [*EARLIER_COLUMNS, "model"]])


@dataclass(frozen=True, slots=True)
class Earlier:
    """The latest stats row of one model for one input: what an earlier run concluded."""

    ok: bool
    output_uri: str | None
    undecodable: bool  # it failed to decode (the bytes are bad, not the store or the worker)
    version: str | None  # None: a row written before versions were recorded
    size: int | None
    finished_at: float | None  # epoch seconds


def same_version(earlier: Earlier, now: StoredObject, *, content: str | None = None) -> bool:
    """Whether ``now`` is the version of the input that ``earlier`` was about.

    ``content``: the :func:`~pipeline.storage.content_version` of the input's bytes now, for stores
    that describe no version (then ``now.version`` is empty).
    """
    if earlier.version is None:
        # A row from before versions were recorded. Trusting it as runs did then (same model, output
        # present: skip) is safe only where the input provably has not changed since that row was
        # written: the same size, and last modified well before the row (LEGACY_MARGIN covers the time
        # between reading the bytes and writing the row, and clocks that disagree). Elsewhere (a store
        # without modification times, a recent write) the input is restored once more, and its new row
        # records the version.
        return (
            earlier.size == now.size
            and now.modified is not None
            and earlier.finished_at is not None
            and now.modified < earlier.finished_at - LEGACY_MARGIN
        )
    if now.version:
        return earlier.version == now.version
    return content is not None and earlier.version == content


def read_stats(files: pa.Table, *, model: str, storage: StorageOptions) -> pa.Table:
    """The rows of ``model`` in each stats file of ``files["shard"]``, as input rows (:data:`INPUT_SCHEMA`)."""
    import pyarrow.dataset as pads

    paths = files.column("shard").to_pylist()
    if not paths:
        return INPUT_SCHEMA.empty_table()
    fs, _ = filesystem(paths[0], storage)
    # The schema is given, not taken from the file: parts written before a column existed (input_version)
    # read as nulls in it.
    table = pads.dataset(
        [split_protocol(p)[1] for p in paths], schema=STATS_SCHEMA, filesystem=fs, format="parquet"
    ).to_table(columns=EARLIER_COLUMNS, filter=pads.field("model") == model)
    return earlier_rows(table)


def earlier_rows(table: pa.Table) -> pa.Table:
    """Stats rows (:data:`EARLIER_COLUMNS`) as input rows (:data:`INPUT_SCHEMA`)."""
    ok = [s == OK for s in table.column("status").to_pylist()]
    errors = table.column("error").to_pylist()
    finished = table.column("finished_at").cast(pa.int64()).to_pylist()  # microseconds
    n = table.num_rows
    return conform(
        {
            "input_uri": table.column("input_uri"),
            "kind": pa.array([EARLIER] * n, pa.int8()),
            "size": table.column("input_bytes"),
            "version": table.column("input_version"),
            "e_output_uri": table.column("output_uri"),
            "e_ok": pa.array(ok, pa.bool_()),
            "e_undecodable": pa.array([not k and (e or "").startswith("decode:") for k, e in zip(ok, errors)]),
            "e_finished": pa.array([None if f is None else f / 1e6 for f in finished], pa.float64()),
        },
        n,
        INPUT_SCHEMA,
    )


def range_of(ranges: list[tuple[str, str]], key: str) -> int | None:
    """The index of the range of the sorted, disjoint ``ranges`` that holds ``key``, or None."""
    j = bisect.bisect_right(ranges, (key, MAX_KEY)) - 1
    return j if j >= 0 and ranges[j][0] <= key < ranges[j][1] else None


def within(ranges: list[tuple[str, str]], key: str) -> bool:
    return range_of(ranges, key) is not None


def read_ranges(index: pa.Table, ranges, *, model: str, storage: StorageOptions, keep) -> pa.Table:
    """Input rows of ``model`` from the row groups of ``index`` that meet ``ranges``, those whose input's
    key passes ``keep`` alone."""
    import pyarrow.parquet as pq

    starts = [a for a, _ in ranges]
    groups: dict[str, list[int]] = {}
    for path, g, lo, hi in zip(*(index.column(c).to_pylist() for c in ("path", "group", "lo", "hi"))):
        # The group's keys, [lo, hi], meet a range where the last range starting at or before hi ends
        # after lo (the ranges are sorted and disjoint: it ends last of those).
        j = bisect.bisect_right(starts, hi) - 1
        if j >= 0 and ranges[j][1] > lo:
            groups.setdefault(path, []).append(g)
    if not groups:
        return INPUT_SCHEMA.empty_table()

    def read(path: str) -> pa.Table:
        fs, p = filesystem(path, storage)
        with fs.open(p, "rb") as f:
            t = pq.ParquetFile(f).read_row_groups(groups[path], columns=[*EARLIER_COLUMNS, "model"])
        # A part written before a column existed has none: nulls (as read_stats reads them).
        t = conform({n: t.column(n) for n in t.column_names}, t.num_rows, EARLIER_SCHEMA)
        t = t.filter(pc.equal(t.column("model"), model))
        return t.filter(pa.array([keep(plan_key(u)) for u in t.column("input_uri").to_pylist()], pa.bool_()))

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(groups)))) as pool:
        return earlier_rows(pa.concat_tables(pool.map(read, groups)))
