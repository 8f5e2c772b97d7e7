"""The two ways a plan's steps run: in this process, or as one Ray Data computation on the cluster.

:mod:`pipeline.planning.plan` describes each strategy once, as steps over datasets; an executor decides
what a dataset is and how a step runs. Both offer the same few operations:

- ``source(shards, tasks)``: a dataset of ``shard`` rows (URIs), in up to ``tasks`` blocks;
- ``map(ds, fn, **kwargs)``: ``fn(table, **kwargs)`` on each block, an Arrow table in and out;
- ``union(a, b)``; ``gather(ds)``: one block (one task sees every row);
- ``spread(ds, per_task=, max_tasks=)`` and ``rows_per_task(ds, rows)``: blocks cut for the next step;
- ``shuffle(ds, key)``: hash partitions by ``key``, so that the rows of one key meet in one block;
- ``collect(ds)``: the plan's rows to restore and its counts.

In this process a dataset is one Arrow table (one partition: every step sees every row, and every
partitioning gives the same plan). On Ray a dataset is a Ray Data ``Dataset``, and the plan stays in the
object store: the driver holds the counts and references to the plan's blocks.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .columns import sum_counts, tally_rows, todo_rows


class InProcess:
    """The steps in this process, on one partition: a dataset is an Arrow table."""

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def source(self, shards: list[str], tasks: int | None = None) -> pa.Table:
        return pa.table({"shard": pa.array(shards, pa.string())})

    def map(self, ds: pa.Table, fn, **kwargs) -> pa.Table:
        return fn(ds, **kwargs)

    def union(self, a: pa.Table, b: pa.Table) -> pa.Table:
        return pa.concat_tables([a, b])

    def gather(self, ds: pa.Table) -> pa.Table:
        return ds

    def spread(self, ds: pa.Table, *, per_task: int, max_tasks: int) -> pa.Table:
        return ds

    def rows_per_task(self, ds: pa.Table, rows: int) -> pa.Table:
        return ds

    def shuffle(self, ds: pa.Table, key: str) -> pa.Table:
        return ds

    def collect(self, ds: pa.Table) -> tuple[list[dict], dict[str, int]]:
        """The rows to restore as dicts, and the counts."""
        return todo_rows(ds).to_pylist(), sum_counts([ds])


class RayData:
    """The steps as one Ray Data computation on the connected cluster.

    Args:
        partitions: hash partitions of each shuffle.
    """

    _ARROW = {"batch_format": "pyarrow", "batch_size": None}

    def __init__(self, partitions: int):
        import ray

        self.ray, self.partitions = ray, partitions

    def __enter__(self) -> RayData:
        # Ray Data's hash shuffle on actors: the object-store shuffle of Ray 2.60's default (shuffle_v2)
        # starts its map tasks in workers of their own runtime environment, seconds on every plan. Each
        # dataset keeps the context it was created under.
        self._ctx = self.ray.data.DataContext.get_current()
        self._strategy, self._ctx.shuffle_strategy = self._ctx.shuffle_strategy, "hash_shuffle"
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.shuffle_strategy = self._strategy

    def source(self, shards: list[str], tasks: int | None = None):
        return self.ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=tasks)

    def map(self, ds, fn, **kwargs):
        return ds.map_batches(fn, fn_kwargs=kwargs or None, **self._ARROW)

    def union(self, a, b):
        return a.union(b)

    def gather(self, ds):
        return ds.repartition(1)

    def spread(self, ds, *, per_task: int, max_tasks: int):
        # Counted in the object store, then split: a split fused into the next step would run in one task.
        ds = ds.materialize()
        return ds.repartition(min(max_tasks, max(1, -(-ds.count() // per_task))))

    def rows_per_task(self, ds, rows: int):
        return ds.repartition(target_num_rows_per_block=rows)

    def shuffle(self, ds, key: str):
        return ds.repartition(self.partitions, keys=[key])

    def collect(self, ds) -> tuple[list[Any], dict[str, int]]:
        """The plan's blocks kept in the object store, and its counts (one row per block) summed here."""
        ds = ds.materialize()
        tallies = ds.map_batches(tally_rows, **self._ARROW)
        return ds.to_arrow_refs(), sum_counts(tallies.iter_batches(**self._ARROW))
