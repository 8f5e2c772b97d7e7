"""Compacting the stats parts: the rows of many runs merged into a few parts in the current layout.

Every run adds parts (:class:`~pipeline.stats.StatsWriter`), and the next plan reads every part's footer,
so after a year of nightly runs an archive's stats are hundreds of small files. Compaction merges them:

- it keeps the latest row of each input and model (as planning reads them: the latest ``finished_at``,
  a row without one counting as the latest), so a plan after it is the plan before it;
- it writes them sorted, in indexed row groups (:func:`~pipeline.stats.write_stats_part`), grouped by
  the input prefix they were planned from, so parts written before that layout (or by manifest runs,
  where their inputs lie under a known prefix) leave the shuffles behind;
- superseded rows go to ``<output>/stats-history/<id>.parquet`` when ``history_days`` keeps them (out of
  ``stats/``, so planning never reads them), and history older than that is deleted.

It runs under the run lock: at the end of a run (:func:`maybe_compact`, once the earlier parts exceed
``stats.compact_after``), or alone (``python jobs/compact_stats.py --output URI``).

**Crash safety.** A journal, ``stats/_compaction.json``, names the parts to replace and the parts to
write before anything is written; each part is written atomically; the journal then records that all are
written, and only then are the old parts deleted, the journal last. Whoever next holds the lock (a run,
or a compaction) finishes a journal that says *written* (deleting what is left of the old parts) and
undoes one that does not (deleting the new parts). So a kill at any point loses no row, and once
recovered doubles none. Until then, and while a compaction runs, an old row and its copy may both be
there: a reader that takes the latest row per input and model (the next plan, and the DuckDB and Polars
queries in the README) sees the same rows at every moment; one that counts raw rows may count a row
twice for that moment.

    >>> compact_stats("s3://archive/restored", storage=StorageOptions())  # doctest: +SKIP
    Compaction(sources=48, rows_in=96000, rows_out=51000, parts=[...], ...)
"""

from __future__ import annotations

import calendar
import io
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from .. import faults
from ..planning.names import inside, under
from ..printable import printable
from ..rows import STATS_SCHEMA
from ..stats import check_parts, plan_key, prefix_id, stats_files, write_stats_part
from ..storage import StorageOptions, filesystem, join_uri, read_bytes, split_protocol, write_bytes_atomic

log = logging.getLogger(__name__)

JOURNAL = "_compaction.json"  # in stats/; not Parquet, so no reader of the parts takes it for one
HISTORY = "stats-history"  # beside stats/: superseded rows kept for history_days
PART_ROWS = 200_000  # rows per compacted part (row groups of STATS_ROW_GROUP within)
WRITING, WRITTEN = "writing", "written"


@dataclass
class Compaction:
    """What one compaction did."""

    sources: int = 0  # parts merged (and deleted)
    rows_in: int = 0
    rows_out: int = 0  # the latest row of each input and model
    parts: list[str] = field(default_factory=list)  # the parts written
    history: str | None = None  # the superseded rows' part, where history is kept
    history_deleted: int = 0  # history parts past their retention, deleted
    prefixes: list[str | None] = field(default_factory=list)  # the input prefixes the parts are laid out for
    recovered: str | None = None  # what was found of an earlier compaction that did not finish
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def compact_stats(
    output_uri: str,
    *,
    storage: StorageOptions,
    input_uri: str | None = None,
    exclude_run: str | None = None,
    history_days: float = 0.0,
    part_rows: int = PART_ROWS,
) -> Compaction:
    """Merge the stats parts of ``output_uri`` into parts in the current layout. Call it under the run
    lock (:class:`~pipeline.run.lock.RunLock`).

    Args:
        input_uri: an input prefix to lay rows out for, besides those the parts record (rows of parts
            written before the layout, or by manifest runs, that lie under it).
        exclude_run: a run whose parts stay as they are (the run that is compacting at its end).
        history_days: keep superseded rows this many days in ``stats-history/`` (0: not kept).

    Raises:
        StatsFileError: a file under ``stats/`` is not a stats part; nothing was written or deleted.
    """
    t0 = time.perf_counter()
    result = Compaction(recovered=recover(output_uri, storage))
    paths = [p for p in stats_files(output_uri, storage) if not _of_run(p, exclude_run)]
    records = check_parts(paths, storage)
    if len(paths) < 2 and not any(r is None for r in records):
        result.history_deleted = _expire_history(output_uri, storage, history_days)
        result.seconds = time.perf_counter() - t0
        return result
    table = _read_parts(paths, storage)
    latest, superseded = latest_rows(table)
    known = {r["input"] for r in records if r} | ({prefix_id(input_uri)} if input_uri else set())
    parts = _layout(latest, sorted(known, key=len, reverse=True), part_rows)
    cid = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    names = [join_uri(output_uri, "stats", f"compact-{cid}-part-{i:05d}.parquet") for i in range(len(parts))]
    history = join_uri(output_uri, HISTORY, f"{cid}.parquet") if history_days > 0 and superseded.num_rows else None
    journal = {"id": cid, "state": WRITING, "sources": paths, "parts": names, "history": history}
    _write_journal(output_uri, journal, storage)
    _failpoint("journal")
    for name, (prefix, rows) in zip(names, parts):
        buf = io.BytesIO()
        write_stats_part(rows, buf, input_uri=prefix)
        write_bytes_atomic(name, buf.getvalue(), storage)
        _failpoint("part")
    if history:
        buf = io.BytesIO()
        write_stats_part(superseded, buf, input_uri=None)
        write_bytes_atomic(history, buf.getvalue(), storage)
    _write_journal(output_uri, {**journal, "state": WRITTEN}, storage)
    _failpoint("written")
    _finish(output_uri, journal, storage)
    result.sources, result.rows_in, result.rows_out = len(paths), table.num_rows, latest.num_rows
    result.parts, result.history, result.prefixes = names, history, [p for p, _ in parts]
    result.history_deleted = _expire_history(output_uri, storage, history_days)
    result.seconds = time.perf_counter() - t0
    return result


def maybe_compact(
    output_uri: str, *, storage: StorageOptions, run_id: str, input_uri: str | None, after: int, history_days: float
) -> Compaction | None:
    """At the end of run ``run_id`` (holding the lock): compact the earlier runs' parts once there are more
    than ``after`` of them (0: never). The run's own parts stay, as its summary names them."""
    if after <= 0:
        return None
    earlier = [p for p in stats_files(output_uri, storage) if not _of_run(p, run_id)]
    if len(earlier) <= after:
        return None
    return compact_stats(
        output_uri, storage=storage, input_uri=input_uri, exclude_run=run_id, history_days=history_days
    )


def recover(output_uri: str, storage: StorageOptions) -> str | None:
    """Finish or undo a compaction that did not end (its journal is still there); call it under the lock.
    Returns what was done, or None where there was no journal."""
    uri = join_uri(output_uri, "stats", JOURNAL)
    try:
        journal = json.loads(read_bytes(uri, storage))
    except FileNotFoundError:
        return None
    journal = _own_paths(journal, output_uri)
    if journal.get("state") == WRITTEN:  # every new part is there: the old ones go
        _finish(output_uri, journal, storage)
        done = f"finished compaction {journal['id']}: {len(journal['sources'])} old parts removed"
    else:  # the new parts may be partial: they go, and the old ones stay
        _remove([*journal["parts"], *([journal["history"]] if journal.get("history") else [])], storage)
        _remove([uri], storage)
        done = f"undid compaction {journal['id']}: its {len(journal['parts'])} new parts removed"
    log.warning("An earlier compaction did not end: %s.", done)
    return done


def _own_paths(journal: dict, output_uri: str) -> dict:
    """``journal`` with only the paths that lie under ``stats/`` and ``stats-history/`` of ``output_uri``: the
    journal is a file in the output prefix, which others may write, and a path elsewhere is never deleted
    (it is left out, with a warning naming it)."""
    folders = (join_uri(output_uri, "stats"), join_uri(output_uri, HISTORY))

    def own(path) -> bool:
        ok = isinstance(path, str) and any(inside(path, f) for f in folders)
        if not ok:
            log.warning("Ignored a path of the compaction journal outside stats/ and %s/: %s", HISTORY, printable(path))
        return ok

    history = journal.get("history")
    return {
        **journal,
        "sources": [p for p in journal.get("sources", []) if own(p)],
        "parts": [p for p in journal.get("parts", []) if own(p)],
        "history": history if history and own(history) else None,
    }


def latest_rows(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``table``'s latest row of each input and model, and the rest (superseded), both in key order.

    The latest is the row with the greatest ``finished_at``, a row without one counting as the latest,
    as planning reads them (:func:`pipeline.planning.settle._now_and_earlier`)."""
    n = table.num_rows
    finished = table.column("finished_at").cast(pa.int64())
    rank = pc.fill_null(finished, pa.scalar(2**63 - 1, pa.int64()))
    keyed = pa.table(
        {
            "input": pc.fill_null(table.column("input_uri"), ""),
            "model": pc.fill_null(table.column("model"), ""),
            "rank": rank,
            "i": pa.array(range(n), pa.int64()),
        }
    )
    order = pc.sort_indices(
        keyed, [("input", "ascending"), ("model", "ascending"), ("rank", "descending"), ("i", "ascending")]
    )
    keyed = keyed.take(order)
    first = pa.array([True] * min(n, 1), pa.bool_())
    if n > 1:
        change = pc.or_(
            pc.not_equal(keyed["input"][1:], keyed["input"][:-1]), pc.not_equal(keyed["model"][1:], keyed["model"][:-1])
        )
        first = pa.concat_arrays([first, change.combine_chunks()])
    taken = table.take(order)
    return taken.filter(first), taken.filter(pc.invert(first))


def _layout(latest: pa.Table, prefixes: list[str], part_rows: int) -> list[tuple[str | None, pa.Table]]:
    """The rows of each prefix (the longest known prefix an input lies under; None: under none), cut into
    parts of at most ``part_rows`` rows, in key order."""
    uris = latest.column("input_uri").to_pylist()
    owner = [next((p for p in prefixes if under(u or "", p)), None) for u in uris]
    out = []
    for prefix in [*sorted({p for p in owner if p is not None}), *([None] if None in owner else [])]:
        rows = latest.filter(pa.array([o == prefix for o in owner], pa.bool_()))
        keys = [plan_key(u or "") for u in rows.column("input_uri").to_pylist()]
        rows = rows.take(pa.array(sorted(range(len(keys)), key=keys.__getitem__), pa.int64()))
        out += [(prefix, rows.slice(i, part_rows)) for i in range(0, rows.num_rows, part_rows)]
    return out


def _read_parts(paths: list[str], storage: StorageOptions) -> pa.Table:
    """Every row of ``paths`` in :data:`STATS_SCHEMA` (columns a part predates read as nulls)."""
    import pyarrow.dataset as pads

    fs, _ = filesystem(paths[0], storage)
    dataset = pads.dataset([split_protocol(p)[1] for p in paths], schema=STATS_SCHEMA, filesystem=fs, format="parquet")
    return dataset.to_table().replace_schema_metadata(None)


def _finish(output_uri: str, journal: dict, storage: StorageOptions) -> None:
    """Delete the parts a written compaction replaced, then its journal."""
    for path in journal["sources"]:
        _remove([path], storage)
        _failpoint("source")
    _remove([join_uri(output_uri, "stats", JOURNAL)], storage)


def _expire_history(output_uri: str, storage: StorageOptions, days: float) -> int:
    """Delete history parts older than ``days`` (by the time in their names); all of them at 0."""
    fs, root = filesystem(join_uri(output_uri, HISTORY), storage)
    if not fs.exists(root):
        return 0
    cutoff = time.time() - days * 86400
    old = []
    for path in fs.find(root):
        stamp = os.path.basename(path).split("-")[0]
        try:
            made = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%S"))
        except ValueError:
            continue  # not a history part of ours: left alone
        if days <= 0 or made < cutoff:
            old.append(path)
    for path in old:
        fs.rm_file(path)
    return len(old)


def _write_journal(output_uri: str, journal: dict, storage: StorageOptions) -> None:
    write_bytes_atomic(join_uri(output_uri, "stats", JOURNAL), json.dumps(journal).encode(), storage)


def _remove(uris: list[str], storage: StorageOptions) -> None:
    for uri in uris:
        fs, path = filesystem(uri, storage)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass


def _of_run(path: str, run_id: str | None) -> bool:
    return run_id is not None and os.path.basename(path).startswith(f"run-{run_id}-part-")


def _failpoint(step: str) -> None:
    """``compact.kill=<step>`` in ``DGUNET_FAILPOINTS``: the process dies here, as under SIGKILL."""
    if faults.fires(faults.from_env(), "compact.kill", step):
        os._exit(137)
