"""Stats parts: how a run lays its stats rows out in Parquet, the writer that does it, and the index that
the next plan reads back.

A run writes its rows (:data:`pipeline.rows.STATS_SCHEMA`) as ``stats/run-<run_id>-part-NNNNN.parquet``
(:class:`StatsWriter`). Each part is sorted by :func:`plan_key` (folder, then name) in row groups of
:data:`STATS_ROW_GROUP`, and its schema's metadata records the input prefix it was planned from and the
key range of each row group (:func:`write_stats_part`). A later plan over the same prefix reads that
index (:func:`stats_index`) and fetches only the row groups of the folders it lists
(:mod:`pipeline.planning`).

    >>> write_stats_part(rows, "part.parquet", input_uri="s3://archive/scans")  # doctest: +SKIP
    >>> stats_index(["part.parquet"], input_uri="s3://archive/scans", storage=StorageOptions())  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from .storage import StorageOptions, filesystem, join_uri, split_protocol, to_uri, write_bytes_atomic

PLAN_METADATA = b"dgunet.plan"  # a stats part's Parquet key: the input prefix and its row groups' key ranges
MAX_KEY = "\U0010ffff"  # after every key
STATS_ROW_GROUP = 1024  # rows per row group of a stats part: what a task reads beyond its own key range
FLUSH_SECONDS = 30.0  # a stats part is written at least this often, so a killed run keeps its rows
INDEX_SCHEMA = pa.schema([("path", pa.string()), ("group", pa.int64()), ("lo", pa.string()), ("hi", pa.string())])
# Columns every stats part has had since the first: a Parquet file under stats/ without them is not ours.
REQUIRED_COLUMNS = ("input_uri", "status", "model")


class StatsFileError(ValueError):
    """A file under ``stats/`` that is not a readable stats part: corrupt, or another program's Parquet.
    Planning stops on it (rows it cannot read could be images done), and compaction never deletes it."""

    def __init__(self, path: str, reason: str):
        super().__init__(
            f"Expected a stats part at {path}, but got {reason} instead; move it out of the stats folder "
            "(or restore it from a copy) and run again."
        )
        self.path = path


def part_record(path: str, storage: StorageOptions) -> dict | None:
    """The layout record of the stats part ``path`` (its input prefix and row groups' key ranges, as
    :func:`write_stats_part` wrote it), or None for a part written without one.

    Raises:
        StatsFileError: ``path`` is not Parquet, or lacks the columns of a stats part.
    """
    import pyarrow.parquet as pq

    fs, p = filesystem(path, storage)
    try:
        with fs.open(p, "rb") as f:
            schema = pq.read_schema(f)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StatsFileError(path, f"a file Parquet cannot read ({' '.join(str(exc).split())[:200]})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise StatsFileError(path, f"a Parquet file without the columns {', '.join(missing)}")
    meta = schema.metadata or {}
    return json.loads(meta[PLAN_METADATA]) if PLAN_METADATA in meta else None


def plan_key(uri: str) -> str:
    """The order of stats rows in a part: by folder, then name, so that every listing shard (a folder's
    tree, or the files directly in a folder) is one key range.

    >>> plan_key("s3://b/in/a/x.png")
    's3://b/in/a/\\x00x.png'
    """
    folder, _, base = uri.rpartition("/")
    return f"{folder}/\x00{base}"


def prefix_id(input_uri: str) -> str:
    """``input_uri`` as stats parts record it (the same prefix however it was spelled)."""
    protocol, path = split_protocol(input_uri)
    return to_uri(protocol, path.rstrip("/"))


def write_stats_part(table: pa.Table, sink, *, input_uri: str | None) -> None:
    """Write stats rows to ``sink`` (a path or a file object) as a run writes a part: sorted by
    :func:`plan_key` in row groups of :data:`STATS_ROW_GROUP`, with ``input_uri`` (the run's input prefix;
    None for a manifest run, whose parts plan through the shuffles) and each row group's key range in the
    schema's metadata."""
    import pyarrow.parquet as pq

    if input_uri is not None and table.num_rows:
        keys = [plan_key(u or "") for u in table.column("input_uri").to_pylist()]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        keys = [keys[i] for i in order]
        step = STATS_ROW_GROUP
        ranges = [[keys[i], keys[min(i + step, len(keys)) - 1]] for i in range(0, len(keys), step)]
        record = json.dumps({"input": prefix_id(input_uri), "ranges": ranges})
        table = table.take(pa.array(order, pa.int64()))
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PLAN_METADATA: record})
    pq.write_table(table, sink, compression="zstd", row_group_size=STATS_ROW_GROUP)


def stats_index(paths: list[str], *, input_uri: str, storage: StorageOptions) -> pa.Table | None:
    """The key range of every row group of the stats parts ``paths`` (:data:`INDEX_SCHEMA`: ``path``,
    ``group``, ``lo``, ``hi``), or None where a part was not written for ``input_uri`` by
    :func:`write_stats_part` (a manifest run's, another prefix's, or one from before): then the earlier
    rows are not where the shards are, and planning goes through the shuffles."""
    prefix = prefix_id(input_uri)
    found = [r["ranges"] if r and r.get("input") == prefix else None for r in check_parts(paths, storage)]
    if any(r is None for r in found):
        return None
    rows = [(path, g, lo, hi) for path, rs in zip(paths, found) for g, (lo, hi) in enumerate(rs)]
    return pa.table({name: [r[i] for r in rows] for i, name in enumerate(INDEX_SCHEMA.names)}, schema=INDEX_SCHEMA)


def check_parts(paths: list[str], storage: StorageOptions) -> list[dict | None]:
    """:func:`part_record` of every part of ``paths``, read on threads.

    Raises:
        StatsFileError: some file is not a stats part (the first such path is named).
    """
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(paths)))) as pool:
        return list(pool.map(lambda p: part_record(p, storage), paths))


def stats_files(output_uri: str, storage: StorageOptions) -> list[str]:
    """The Parquet files under ``<output>/stats``: one per part a run wrote, not per image."""
    stats = join_uri(output_uri, "stats")
    fs, root = filesystem(stats, storage)
    protocol, _ = split_protocol(stats)
    if not fs.exists(root):
        return []
    return sorted(to_uri(protocol, p) for p in fs.find(root) if p.endswith(".parquet"))


class StatsWriter:
    """Buffers stats rows and writes them as ``stats/run-<run_id>-part-NNNNN.parquet`` files.

    Args:
        output_uri: the run's output prefix.
        run_id: the run whose parts these are.
        storage: how to reach the output.
        part_rows: rows per part (one is also cut every :data:`FLUSH_SECONDS`).
        input_uri: the input prefix the run was planned from, recorded in each part for the next plan
            (None: a manifest run's parts, which plan through the shuffles).
        on_rows: called with every table of rows added, once (the run's metrics, :mod:`pipeline.run.metrics`).
    """

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        *,
        storage: StorageOptions,
        part_rows: int,
        input_uri: str | None,
        on_rows: Callable[[pa.Table], None] | None = None,
    ):
        self.base, self.run_id, self.storage = join_uri(output_uri, "stats"), run_id, storage
        self.part_rows, self.input_uri, self.on_rows = part_rows, input_uri, on_rows
        self.pending: list[pa.Table] = []
        self.rows, self.parts, self.last = 0, [], time.monotonic()

    def add(self, table: pa.Table) -> None:
        """``table``: rows in :data:`~pipeline.rows.STATS_SCHEMA`."""
        if self.on_rows is not None:
            self.on_rows(table)
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= self.part_rows or time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        buf = io.BytesIO()
        write_stats_part(pa.concat_tables(self.pending), buf, input_uri=self.input_uri)
        uri = join_uri(self.base, f"run-{self.run_id}-part-{len(self.parts):05d}.parquet")
        write_bytes_atomic(uri, buf.getvalue(), self.storage)
        self.parts.append(uri)
        self.pending, self.rows, self.last = [], 0, time.monotonic()
