"""Planning shards whole, without a shuffle.

A run over an archive whose earlier stats were all written for this input prefix
(:func:`pipeline.stats.write_stats_part`: each part sorted by :func:`~pipeline.stats.plan_key`, the key
range of each row group in its metadata) needs no shuffle: each listing task reads the row groups of its
shards' key ranges, lists the output folders that mirror its folders, and plans its shards whole
(:func:`plan_shards`); one more task counts the inputs of folders that are gone (:func:`vanished_elsewhere`).
Both settling steps (:mod:`pipeline.planning.settle`) run there unchanged.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..stats import MAX_KEY
from ..storage import StorageOptions
from .columns import counts_row
from .earlier import range_of, read_ranges, within
from .listing import list_shards, listed_inputs, mirrors, shard_ranges
from .settle import settle_names


def plan_shards(
    shards: pa.Table,
    *,
    storage: StorageOptions,
    settle,
    input_uri: str,
    output_uri: str,
    model: str,
    index: pa.Table | None = None,
    outputs: bool = False,
) -> pa.Table:
    """List ``shards`` and plan them in one task: :data:`~pipeline.planning.columns.PLANNED_SCHEMA`.

    Every input that could want an input's name is in its folder, which one shard holds whole. With no
    earlier stats (``index`` None: a first run) no name is claimed and no output can be skipped. With an
    ``index`` (:func:`~pipeline.stats.stats_index`: the earlier parts were all written for this input
    prefix), the earlier rows of the shards' inputs are in the row groups whose key ranges meet the
    shards' (read here, those rows alone kept), and their outputs in the output folders that mirror the
    shards (listed here). ``settle``: :func:`~pipeline.planning.settle.settle_inputs` with the run's
    arguments. ``outputs``: the output prefix has images; without earlier stats they are listed too, so
    that a file under an input's name that no row accounts for is marked (see
    :func:`~pipeline.planning.settle.settle_names`).
    """
    inputs = listed_inputs(list_shards(shards, storage=storage, images_only=True))
    present: set[str] = set()
    if index is not None or outputs:  # ``outputs``: the output has images (a first run may find some)
        folders = mirrors(shards, input_uri=input_uri, output_uri=output_uri)
        listed = list_shards(folders, storage=storage, images_only=False, missing_ok=True, names_only=True)
        present = set(listed.column("uri").to_pylist())
    if index is None:
        return settle_names(settle(inputs), output_uri=output_uri, present=present)
    ranges = shard_ranges(shards)
    earlier = read_ranges(index, ranges, model=model, storage=storage, keep=lambda k: within(ranges, k))
    routed = settle(pa.concat_tables([inputs, earlier]), present=present)
    return settle_names(routed, output_uri=output_uri, present=present)


def vanished_elsewhere(shards: pa.Table, *, index: pa.Table, model: str, storage: StorageOptions) -> pa.Table:
    """The inputs with earlier rows of ``model`` in no shard of ``shards`` (every shard of the prefix:
    their folders are gone), counted as vanished: :data:`PLANNED_SCHEMA`'s counts row. Only row groups
    whose key range is not inside one shard's are read."""
    ranges = shard_ranges(shards)
    lows, highs = index.column("lo").to_pylist(), index.column("hi").to_pylist()
    inside = [(j := range_of(ranges, lo)) is not None and hi < ranges[j][1] for lo, hi in zip(lows, highs)]
    rest = index.filter(pc.invert(pa.array(inside, pa.bool_())))
    gone = read_ranges(rest, [("", MAX_KEY)], model=model, storage=storage, keep=lambda k: not within(ranges, k))
    return counts_row(vanished=len(set(gone.column("input_uri").to_pylist())))
