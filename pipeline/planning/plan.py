"""Making a run's plan: which inputs to restore, under which names, and what is already done.

Three strategies, each described once (:func:`_strategy`) as steps over datasets, and run by either
executor (:mod:`pipeline.planning.executors`): in this process, or as one Ray Data computation.

- **colocated** (a listed prefix whose earlier stats parts were all written for it, or a first run): the
  prefix's shards (its first-level folders, and the files directly in it) are planned whole by listing
  tasks, each reading the earlier rows of its own folders and listing the output folders that mirror
  them (:mod:`pipeline.planning.colocated`); no shuffle.
- **manifest**: the manifest's entries are described by tasks, then settled as below.
- **shuffle** (a listed prefix whose earlier parts are not laid out for it): the listing and the earlier
  stats (one task per Parquet file) meet in a hash partitioning by input, and a second one by output
  name meets each input with the claims on the names it could take and the outputs present
  (:mod:`pipeline.planning.settle`).

On Ray the plan stays in the object store; the driver holds the counts and references to the plan's
blocks, so its memory does not grow with the archive. Without Ray (tests, notebooks, and stores only
this process reaches, such as fsspec's ``memory://``) the same steps run here, on one partition.

    >>> plan = make_plan(input_uri="s3://b/in", output_uri="s3://b/out", model=ref.id,
    ...                  storage=StorageOptions())  # doctest: +SKIP
    >>> plan.planned, plan.skipped  # doctest: +SKIP
    (120, 4880)
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..stats import check_parts, stats_index
from ..stats import stats_files as find_stats_files
from ..storage import StorageOptions, filesystem, join_uri, read_bytes, split_protocol
from .colocated import plan_shards, vanished_elsewhere
from .columns import PLANNED_SCHEMA, todo_rows
from .earlier import read_stats
from .executors import InProcess, RayData
from .listing import describe_entries, list_shards, list_top, listed_inputs, manifest_lines
from .settle import present_outputs, settle_inputs, settle_names

# Hash partitions of each shuffle (an input's rows in a partition are held by one task): 4 per CPU of
# the cluster, from 8 to 256; PARTITIONS fixes the number. On 2 CPUs a re-run of 100k objects, all done,
# planned in 26.6 s with 4 partitions, 27.9 s with 8 and 39.5 s with 32 (bench/scale.py --rerun).
PARTITIONS: int | None = None
# Plan without a shuffle where the earlier stats allow it (colocated.plan_shards); False: always shuffle.
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
    new: int = 0  # in todo with no earlier row of the model
    retried: int = 0  # in todo because this version failed before (not to decode): tried again
    rows: list[dict] | None = field(default=None, repr=False)  # the rows to restore, when planned without Ray
    blocks: list[Any] | None = field(default=None, repr=False)  # else the plan's blocks in Ray's object store
    adopted: frozenset[str] = frozenset()  # inputs whose output was adopted (pipeline.run.adoption): not restored

    @property
    def todo(self) -> list[dict]:
        """The rows to restore, in URI order, as a list (from the object store: small plans only)."""
        rows = self.rows if self.blocks is None else self.dataset().take_all()
        return sorted((r for r in rows if r["input_uri"] not in self.adopted), key=lambda r: r["input_uri"])

    def adopt(self, uris: frozenset[str]) -> None:
        """Leave ``uris`` out of the rows to restore: their outputs were adopted."""
        self.adopted |= uris
        self.planned -= len(uris)

    def dataset(self):
        """The rows to restore as a new Ray Dataset (it takes the current ``DataContext``), over the
        object store's blocks: the driver holds their references only."""
        import ray

        if self.blocks is None:
            return ray.data.from_items([r for r in self.rows or [] if r["input_uri"] not in self.adopted])
        blocks = self.blocks or [ray.put(PLANNED_SCHEMA.empty_table())]
        todo = functools.partial(todo_rows, leave_out=self.adopted)
        return ray.data.from_arrow_refs(blocks).map_batches(todo, batch_format="pyarrow", batch_size=None)


@dataclass(frozen=True)
class _Run:
    """What a plan is made from."""

    input_uri: str
    output_uri: str
    model: str
    storage: StorageOptions
    manifest: str | None
    stats_files: list[str]
    settle: Any  # settle_inputs with the run's arguments


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
    (``png``, ``webp``, ``jpeg``, ``tiff`` or ``same``; see
    :func:`~pipeline.planning.names.output_format_for`).

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
    run = _Run(input_uri, output_uri, model, storage, manifest, find_stats_files(output_uri, storage), settle)
    executor = RayData(partitions or default_partitions()) if distributed else InProcess()
    with executor:
        rows, counts = executor.collect(_strategy(executor, run))
    return Plan(
        planned=counts["todo"],
        skipped=counts["skipped"],
        still_bad=counts["still_bad"],
        listed=counts["listed"],
        seconds=time.perf_counter() - t0,
        changed=counts["changed"],
        vanished=counts["vanished"],
        reformatted=counts["reformatted"],
        new=counts["new"],
        retried=counts["retried"],
        **({"blocks": rows} if distributed else {"rows": rows}),
    )


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


# The strategies, as steps over an executor's datasets.


def _strategy(x, run: _Run):
    """The plan's dataset: colocated where the earlier stats allow it, else through the shuffles."""
    if run.manifest or not COLOCATED:
        check_parts(run.stats_files, run.storage)  # a file that is not a stats part stops the plan, named
        return _shuffled(x, run)
    index = stats_index(run.stats_files, input_uri=run.input_uri, storage=run.storage) if run.stats_files else None
    if run.stats_files and index is None:  # some earlier part was not laid out for this prefix
        return _shuffled(x, run)
    return _colocated(x, run, index)


def _colocated(x, run: _Run, index: pa.Table | None):
    """Each listing task plans its shards (folders) whole; one more counts the inputs of folders gone."""
    shards = _shards(x, run.input_uri, run.storage)
    common = {"storage": run.storage, "input_uri": run.input_uri, "output_uri": run.output_uri, "model": run.model}
    fs, images = filesystem(join_uri(run.output_uri, "images"), run.storage)
    outputs = index is None and fs.exists(images)
    planned = x.map(shards, plan_shards, settle=run.settle, index=index, outputs=outputs, **common)
    if index is None:
        return planned
    gone = x.map(x.gather(shards), vanished_elsewhere, index=index, model=run.model, storage=run.storage)
    return x.union(planned, gone)


def _shuffled(x, run: _Run):
    """The inputs (a manifest's or a listing's) meet their earlier rows by input, then the names' claims
    and the outputs present by name."""
    if run.manifest:
        lines = x.map(x.source([run.manifest]), manifest_lines, storage=run.storage)
        inputs = x.map(x.rows_per_task(lines, MANIFEST_ROWS_PER_TASK), describe_entries, storage=run.storage)
    else:
        inputs = x.map(_listing(x, run.input_uri, run.storage, images_only=True), listed_inputs)
    if run.stats_files:
        files = x.source(run.stats_files, tasks=min(len(run.stats_files), STATS_TASKS))
        earlier = x.map(files, read_stats, model=run.model, storage=run.storage)
        # An input's listing row and its earlier rows meet in one partition.
        inputs = x.shuffle(x.union(inputs, earlier), "input_uri")
    # Without earlier rows each input is alone: no shuffle needed to settle it.
    routed = x.map(inputs, run.settle)
    images = join_uri(run.output_uri, "images")
    fs, root = filesystem(images, run.storage)
    if fs.exists(root):
        present = _listing(x, images, run.storage, images_only=False, names_only=True)
        routed = x.union(routed, x.map(present, present_outputs))
    # Inputs that could want one name, the claims on it and the output present under it meet in one partition.
    return x.map(x.shuffle(routed, "name_key"), settle_names, output_uri=run.output_uri)


def _shards(x, uri: str, storage: StorageOptions):
    """The shards of ``uri`` (:func:`~pipeline.planning.listing.list_top`), :data:`SHARDS_PER_TASK` a
    task (at most :data:`LISTING_TASKS` tasks)."""
    shards = x.map(x.source([uri]), list_top, storage=storage)
    return x.spread(shards, per_task=SHARDS_PER_TASK, max_tasks=LISTING_TASKS)


def _listing(x, uri: str, storage: StorageOptions, *, images_only: bool, names_only: bool = False):
    """Every object under ``uri`` (:data:`~pipeline.planning.columns.LISTED_SCHEMA`), listed by tasks,
    :data:`SHARDS_PER_TASK` shards each (``names_only``: see :func:`~pipeline.planning.listing.list_shards`)."""
    return x.map(_shards(x, uri, storage), list_shards, storage=storage, images_only=images_only, names_only=names_only)


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
