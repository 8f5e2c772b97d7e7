"""Planning a run: list the inputs, name their outputs, skip what is already done.

On a Ray cluster planning is a Ray Data computation (the stages are in :mod:`pipeline.plan_stages`):
the input prefix is listed in shards (its first-level folders, and the files directly in it) by tasks;
the earlier stats are read by tasks, one per Parquet file; a hash partitioning by input joins each
input's listing with its latest earlier row, and a second one by output name (:func:`name_key`) meets
each input with the claims on the names it could take and the outputs present. Runs write their stats
parts for the next plan (each ordered by folder, with its input prefix and its row groups' key ranges in
its metadata), so a run over a prefix whose earlier parts were all written for it needs neither shuffle:
each listing task reads the earlier rows of its own folders and lists the output folders that mirror
them (:func:`~pipeline.plan_stages.plan_shards`). The plan is kept in
Ray's object store; the driver holds the numbers of inputs to restore, skipped and so on, and
references to the plan's blocks, so its memory does not grow with the archive. Without Ray (tests,
notebooks, and stores only this process reaches, such as fsspec's ``memory://``) the same stages run
here, on one partition.

Output names mirror the input's path relative to the input prefix with the extension replaced by the
output format's (``.png``, ``.webp``, ``.jpg``, ``.tif``; with ``output.format: same``, the input's own
format by its extension, ``.png`` for the others). Key segments that could escape the output prefix
(``..``, empty, absolute) are rewritten. When two inputs would get one name (``a.jpg`` and ``a.png``),
the first to claim it keeps it (earlier runs claim first, then inputs in URI order, or a manifest's
order) and the others get ``<name>.<ext>.png``, so nothing is overwritten and names stay stable from
run to run.

A run is incremental: an input is skipped when the latest stats row of the same model is about the same
version of it (:attr:`~pipeline.storage.StoredObject.version`: ETag, size and last-modified from the
listing, size and mtime for local files, a content hash where the store gives neither) and is ``ok`` with
its output present, or failed to decode. A re-run over an unchanged archive does no work; new uploads and
overwritten inputs (whatever their size) are restored, other failures are retried. An output in another
format than the one asked for now is a change of output: the input is restored again into a new name
(``reformatted``; the old file stays). Inputs that earlier runs saw and that are gone now are counted as
``vanished``; their outputs stay.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .plan_stages import (  # noqa: F401  (the planning rules, re-exported where callers look for them)
    COUNTS,
    INPUT_SCHEMA,
    LEGACY_MARGIN,
    PLANNED_SCHEMA,
    ROUTED_SCHEMA,
    TODO_COLUMNS,
    Earlier,
    describe_entries,
    list_shards,
    list_top,
    listed_inputs,
    manifest_lines,
    name_key,
    output_format_for,
    plan_shards,
    present_outputs,
    read_stats,
    relative_key,
    safe_relative,
    same_version,
    settle_inputs,
    settle_names,
    stats_index,
    vanished_elsewhere,
    write_stats_part,
)
from .storage import StorageOptions, filesystem, join_uri, read_bytes, split_protocol, to_uri

# Hash partitions of each shuffle (an input's rows in a partition are held by one task): 4 per CPU of
# the cluster, from 8 to 256; PARTITIONS fixes the number. On 2 CPUs a re-run of 100k objects, all done,
# planned in 26.6 s with 4 partitions, 27.9 s with 8 and 39.5 s with 32 (bench/scale.py --rerun).
PARTITIONS: int | None = None
# Plan without a shuffle where the earlier stats allow it (plan_stages.plan_shards); False: always shuffle.
COLOCATED = True
PARTITIONS_PER_CPU, MIN_PARTITIONS, MAX_PARTITIONS = 4, 8, 256
SHARDS_PER_TASK = 8  # listing shards (folders) per listing task; a task lists them on threads
# Listing tasks at most (more shards per task beyond): the driver keeps a little of each task's block
# (its reference, Ray Data's statistics), which should not grow with the archive.
LISTING_TASKS = 256
MANIFEST_ROWS_PER_TASK = 1000  # manifest entries described (one metadata request each) per task
STATS_TASKS = 64  # tasks reading the earlier stats files, at most


@dataclass
class Plan:
    """What a run will do: counts, and the rows to restore (``input_uri``, ``size``, ``version``,
    ``output_uri``, ``reference_uri``), as a Ray Dataset over the object store or a list."""

    planned: int  # inputs to restore
    skipped: int  # this version restored before by the same model, output present
    still_bad: int  # this version failed to decode before
    listed: int
    seconds: float = 0.0
    changed: int = 0  # in todo because the input changed since it was restored (or failed to decode)
    vanished: int = 0  # inputs with earlier rows that are gone now (their outputs stay)
    reformatted: int = 0  # in todo because their output is in another format than the one asked for now
    rows: list[dict] | None = field(default=None, repr=False)  # the rows to restore, when planned without Ray
    blocks: list[Any] | None = field(default=None, repr=False)  # else the plan's blocks in Ray's object store

    @property
    def todo(self) -> list[dict]:
        """The rows to restore, in URI order, as a list (from the object store: small plans only)."""
        rows = self.rows if self.blocks is None else self.dataset().take_all()
        return sorted(rows, key=lambda r: r["input_uri"])

    def dataset(self):
        """The rows to restore as a new Ray Dataset (it takes the current ``DataContext``), over the
        object store's blocks: the driver holds their references only."""
        import ray

        if self.blocks is None:
            return ray.data.from_items(self.rows or [])
        blocks = self.blocks or [ray.put(PLANNED_SCHEMA.empty_table())]
        return ray.data.from_arrow_refs(blocks).map_batches(_todo_rows, batch_format="pyarrow", batch_size=None)


def read_manifest(uri: str, storage: StorageOptions) -> list[str]:
    """Input URIs from a text file, one per line (blank lines and ``#`` comments ignored)."""
    lines = read_bytes(uri, storage).decode("utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def _stats_files(output_uri: str, storage: StorageOptions) -> list[str]:
    """The Parquet files under ``<output>/stats``: one per part a run wrote, not per image."""
    stats = join_uri(output_uri, "stats")
    fs, root = filesystem(stats, storage)
    protocol, _ = split_protocol(stats)
    if not fs.exists(root):
        return []
    return sorted(to_uri(protocol, p) for p in fs.find(root) if p.endswith(".parquet"))


def _counts(tables) -> dict[str, int]:
    totals = dict.fromkeys(COUNTS, 0)
    for t in tables:
        for c in COUNTS:
            totals[c] += int(pc.sum(t.column(f"n_{c}")).as_py() or 0)
    return totals


def _tally_rows(t: pa.Table) -> pa.Table:
    return t.filter(pc.is_null(t.column("input_uri")))


def _todo_rows(t: pa.Table) -> pa.Table:
    return t.filter(pc.is_valid(t.column("input_uri"))).select(TODO_COLUMNS)


def default_partitions() -> int:
    """:data:`PARTITIONS`, or 4 per CPU of the connected cluster, from 8 to 256."""
    import ray

    if PARTITIONS:
        return PARTITIONS
    cpus = int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0
    return max(MIN_PARTITIONS, min(MAX_PARTITIONS, PARTITIONS_PER_CPU * cpus))


def _use_ray(*uris: str) -> bool:
    """Whether to plan on the cluster: Ray is initialized here, and no store is this process's own
    (fsspec's memory filesystem)."""
    import ray

    return ray.is_initialized() and not any(split_protocol(u)[0] == "memory" for u in uris if u)


def make_plan(
    *,
    input_uri: str,
    output_uri: str,
    model: str,
    storage: StorageOptions,
    manifest: str | None = None,
    reference: str | None = None,
    output_format: str = "png",
    distributed: bool | None = None,
    partitions: int | None = None,
) -> Plan:
    """List the inputs (or read the manifest), skip done ones, and assign output URIs in ``output_format``
    (``png``, ``webp``, ``jpeg``, ``tiff`` or ``same``; see :func:`output_format_for`).

    Args:
        distributed: plan with Ray Data on the connected cluster (None: where Ray is initialized and
            the stores are not this process's own).
        partitions: hash partitions of each of the two shuffles (None: :func:`default_partitions`).
    """
    if distributed is None:
        distributed = _use_ray(input_uri, output_uri, manifest or "")
    t0 = time.perf_counter()
    settle = functools.partial(
        settle_inputs,
        input_uri=input_uri,
        output_uri=output_uri,
        output_format=output_format,
        reference=reference,
        manifest=bool(manifest),
        storage=storage,
    )
    stats_files = _stats_files(output_uri, storage)
    plan_rows = _plan_ray if distributed else _plan_here
    rows, counts = plan_rows(
        input_uri=input_uri,
        output_uri=output_uri,
        model=model,
        storage=storage,
        manifest=manifest,
        stats_files=stats_files,
        settle=settle,
        partitions=partitions or (default_partitions() if distributed else 1),
    )
    return Plan(
        planned=counts["todo"],
        skipped=counts["skipped"],
        still_bad=counts["still_bad"],
        listed=counts["listed"],
        seconds=time.perf_counter() - t0,
        changed=counts["changed"],
        vanished=counts["vanished"],
        reformatted=counts["reformatted"],
        **({"blocks": rows} if distributed else {"rows": rows}),
    )


def _one(uri: str) -> pa.Table:
    return pa.table({"shard": [uri]})


def _colocated_index(*, input_uri, manifest, stats_files, storage) -> tuple[bool, pa.Table | None]:
    """Whether the plan can be made without a shuffle (:func:`~pipeline.plan_stages.plan_shards`), and
    the earlier parts' :func:`~pipeline.plan_stages.stats_index` for it (None: a first run)."""
    if manifest or not COLOCATED:
        return False, None
    if not stats_files:
        return True, None
    index = stats_index(stats_files, input_uri=input_uri, storage=storage)
    return index is not None, index


def _plan_here(*, input_uri, output_uri, model, storage, manifest, stats_files, settle, partitions):
    """The stages in this process, on one partition."""
    colocated, index = _colocated_index(
        input_uri=input_uri, manifest=manifest, stats_files=stats_files, storage=storage
    )
    if colocated:
        shards = list_top(_one(input_uri), storage=storage)
        common = {"storage": storage, "input_uri": input_uri, "output_uri": output_uri, "model": model}
        tables = [plan_shards(shards, settle=settle, index=index, **common)]
        if index is not None:
            tables.append(vanished_elsewhere(shards, index=index, model=model, storage=storage))
        return [r for t in tables for r in _todo_rows(t).to_pylist()], _counts(tables)
    if manifest:
        inputs = describe_entries(manifest_lines(_one(manifest), storage=storage), storage=storage)
    else:
        inputs = listed_inputs(
            list_shards(list_top(_one(input_uri), storage=storage), storage=storage, images_only=True)
        )
    if stats_files:
        earlier = read_stats(pa.table({"shard": stats_files}), model=model, storage=storage)
        inputs = pa.concat_tables([inputs, earlier])
    images = join_uri(output_uri, "images")
    present = list_shards(list_top(_one(images), storage=storage), storage=storage, images_only=False, names_only=True)
    present = present_outputs(present)
    planned = settle_names(pa.concat_tables([settle(inputs), present]), output_uri=output_uri)
    return _todo_rows(planned).to_pylist(), _counts([planned])


def _shards(ray, uri: str, storage: StorageOptions):
    """The shards of ``uri`` (:func:`~pipeline.plan_stages.list_top`), :data:`SHARDS_PER_TASK` a block
    (at most :data:`LISTING_TASKS` blocks)."""
    shards = ray.data.from_items([{"shard": uri}]).map_batches(
        list_top, fn_kwargs={"storage": storage}, batch_format="pyarrow", batch_size=None
    )
    # Counted in the object store, then split: a split fused into the listing would list in one task.
    shards = shards.materialize()
    return shards.repartition(min(LISTING_TASKS, max(1, -(-shards.count() // SHARDS_PER_TASK))))


def _listing(ray, uri: str, storage: StorageOptions, *, images_only: bool, names_only: bool = False):
    """A Ray Dataset of every object under ``uri`` (:data:`~pipeline.plan_stages.LISTED_SCHEMA`), listed
    by tasks, :data:`SHARDS_PER_TASK` shards each (``names_only``: see :func:`list_shards`)."""
    return _shards(ray, uri, storage).map_batches(
        list_shards,
        fn_kwargs={"storage": storage, "images_only": images_only, "names_only": names_only},
        batch_format="pyarrow",
        batch_size=None,
    )


def _plan_ray(**kwargs):
    """The stages as one Ray Data computation; the plan stays in the object store."""
    import ray

    ctx = ray.data.DataContext.get_current()
    # Ray Data's hash shuffle on actors: the object-store shuffle of Ray 2.60's default (shuffle_v2) starts
    # its map tasks in workers of their own runtime environment, seconds on every plan. Each dataset
    # keeps the context it was created under.
    strategy, ctx.shuffle_strategy = ctx.shuffle_strategy, "hash_shuffle"
    try:
        return _plan_datasets(ray, **kwargs)
    finally:
        ctx.shuffle_strategy = strategy


def unfinished_rows(plan: Plan, stats_parts: list[str], storage: StorageOptions) -> list[dict]:
    """The plan's rows whose input has no row in ``stats_parts`` (the run's stats written so far): the
    images a pass lost with workers that died. Only runs that lost some pay for it: the parts' input URIs
    are held as one Arrow string array (a few dozen bytes each, no Python object per name) while the
    plan streams past them; no shuffle, which could wait for CPUs that the pipeline's actors still hold."""
    import io

    import pyarrow.parquet as pq

    def column(uri: str) -> pa.ChunkedArray:
        return pq.read_table(io.BytesIO(read_bytes(uri, storage)), columns=["input_uri"]).column("input_uri")

    done = pa.chunked_array([c for uri in stats_parts for c in column(uri).chunks], pa.string()).combine_chunks()
    lost: list[dict] = []
    for batch in plan.dataset().iter_batches(batch_format="pyarrow", batch_size=None):
        lost += batch.filter(pc.invert(pc.is_in(batch.column("input_uri"), value_set=done))).to_pylist()
    return lost


def _plan_datasets(ray, *, input_uri, output_uri, model, storage, manifest, stats_files, settle, partitions):
    arrow = {"batch_format": "pyarrow", "batch_size": None}
    colocated, index = _colocated_index(
        input_uri=input_uri, manifest=manifest, stats_files=stats_files, storage=storage
    )
    if colocated:  # each listing task plans its shards (folders) whole
        shards = _shards(ray, input_uri, storage)
        common = {"storage": storage, "input_uri": input_uri, "output_uri": output_uri, "model": model}
        planned = shards.map_batches(plan_shards, fn_kwargs={"settle": settle, "index": index, **common}, **arrow)
        if index is not None:  # the inputs of folders that are gone, in one task that sees every shard
            gone = shards.repartition(1).map_batches(
                vanished_elsewhere, fn_kwargs={"index": index, "model": model, "storage": storage}, **arrow
            )
            planned = planned.union(gone)
        return _collect(planned)
    if manifest:
        inputs = ray.data.from_items([{"shard": manifest}]).map_batches(
            manifest_lines, fn_kwargs={"storage": storage}, **arrow
        )
        inputs = inputs.repartition(target_num_rows_per_block=MANIFEST_ROWS_PER_TASK)
        inputs = inputs.map_batches(describe_entries, fn_kwargs={"storage": storage}, **arrow)
    else:
        inputs = _listing(ray, input_uri, storage, images_only=True).map_batches(listed_inputs, **arrow)
    if stats_files:
        files = [{"shard": f} for f in stats_files]
        earlier = ray.data.from_items(files, override_num_blocks=min(len(files), STATS_TASKS))
        earlier = earlier.map_batches(read_stats, fn_kwargs={"model": model, "storage": storage}, **arrow)
        # An input's listing row and its earlier rows meet in one partition.
        inputs = inputs.union(earlier).repartition(partitions, keys=["input_uri"])
    # Without earlier rows each input is alone: no shuffle needed to settle it.
    routed = inputs.map_batches(settle, **arrow)
    images = join_uri(output_uri, "images")
    fs, root = filesystem(images, storage)
    if fs.exists(root):
        present = _listing(ray, images, storage, images_only=False, names_only=True).map_batches(
            present_outputs, **arrow
        )
        routed = routed.union(present)
    # Inputs that could want one name, the claims on it and the output present under it meet in one partition.
    planned = routed.repartition(partitions, keys=["name_key"]).map_batches(
        settle_names, fn_kwargs={"output_uri": output_uri}, **arrow
    )
    return _collect(planned)


def _collect(planned):
    """The plan's blocks kept in the object store, and its counts (one row per block) summed here."""
    planned = planned.materialize()
    tallies = planned.map_batches(_tally_rows, batch_format="pyarrow", batch_size=None)
    return planned.to_arrow_refs(), _counts(tallies.iter_batches(batch_format="pyarrow", batch_size=None))
