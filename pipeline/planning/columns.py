"""The tables that flow between planning's steps, and the plan's own columns.

The plan's rows are the pipeline's first columns, :class:`pipeline.rows.Col`'s planned ones
(:data:`TODO_COLUMNS`); the other schemas are planning's own: a listing, the rows that meet an input's
listing with its earlier stats (settled by :func:`~pipeline.planning.settle.settle_inputs`), and the rows
that meet an input with the claims on the names it could take (:func:`~pipeline.planning.settle.settle_names`).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..rows import Col

# Shards of a listing: what to list under ``shard``.
TREE, FLAT, FILE = "tree", "flat", "file"  # everything below a folder; the files directly in it; one file
SHARD_SCHEMA = pa.schema([("shard", pa.string()), ("mode", pa.string())])
LISTED_SCHEMA = pa.schema(
    [("uri", pa.string()), ("size", pa.int64()), ("version", pa.string()), ("modified", pa.float64())]
)

# Rows of the first settling step: what the listing (or the manifest) says of an input, or an earlier stats row.
LISTED, MISSING, EARLIER = 0, 1, 2  # kind: listed; a manifest entry that is not there; an earlier row
INPUT_SCHEMA = pa.schema(
    [
        (Col.INPUT_URI, pa.string()),
        ("kind", pa.int8()),
        ("order", pa.int64()),  # a manifest entry's line (listed inputs: 0, named in URI order)
        (Col.SIZE, pa.int64()),  # listed: the size now; earlier: input_bytes
        (Col.VERSION, pa.string()),  # listed: the version now; earlier: input_version
        ("modified", pa.float64()),
        ("e_output_uri", pa.string()),
        ("e_ok", pa.bool_()),
        ("e_undecodable", pa.bool_()),
        ("e_finished", pa.float64()),  # epoch seconds
    ]
)

# Rows of the second settling step.
RECORD, CLAIM, PRESENT, TALLY = 0, 1, 2, 3  # an input to decide; an earlier row's name; an output; counts
# new: no earlier row; retried: the same version failed before (not to decode): both restored, in todo
COUNTS = ("listed", "skipped", "still_bad", "changed", "vanished", "reformatted", "todo", "new", "retried")
COUNT_FIELDS = [(f"n_{c}", pa.int64()) for c in COUNTS]
ROUTED_SCHEMA = pa.schema(
    [
        ("name_key", pa.string()),
        ("kind", pa.int8()),
        (Col.INPUT_URI, pa.string()),
        ("order", pa.int64()),
        (Col.SIZE, pa.int64()),
        (Col.VERSION, pa.string()),
        (Col.OUTPUT_URI, pa.string()),  # record: the name it keeps (null: to be named); claim, present: the name
        ("same", pa.bool_()),  # record: the version restored before is the one listed now
        ("rel", pa.string()),
        ("format", pa.string()),
        (Col.REFERENCE_URI, pa.string()),
        *COUNT_FIELDS,
    ]
)

# The plan: one row per input to restore (the pipeline's planned columns), and rows of counts (input_uri null).
TODO_FIELDS = [
    pa.field(Col.INPUT_URI, pa.string()),
    pa.field(Col.SIZE, pa.int64()),
    pa.field(Col.VERSION, pa.string()),  # "": the read stage records the content's hash instead
    pa.field(Col.OUTPUT_URI, pa.string()),
    pa.field(Col.REFERENCE_URI, pa.string()),  # "" not None: all-None columns lose their type
    pa.field(Col.OUTPUT_PRESENT, pa.bool_()),  # a file is under the output's name that no stats row accounts for
]
TODO_COLUMNS = [f.name for f in TODO_FIELDS]
PLANNED_SCHEMA = pa.schema([*TODO_FIELDS, *COUNT_FIELDS])


def conform(columns: dict, n: int, schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from ``columns``, the others null."""
    return pa.table(
        {f.name: columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema},
        schema=schema,
    )


def counts_row(**counts: int) -> pa.Table:
    """:data:`PLANNED_SCHEMA`'s row of counts (``todo`` columns null), the ``counts`` given, the others 0."""
    values = {f"n_{c}": [counts.get(c, 0)] for c in COUNTS}
    return pa.table({**{name: [None] for name in TODO_COLUMNS}, **values}, schema=PLANNED_SCHEMA)


def todo_rows(planned: pa.Table, leave_out: frozenset[str] = frozenset()) -> pa.Table:
    """The rows to restore of ``planned`` (:data:`PLANNED_SCHEMA`): :data:`TODO_COLUMNS`, no counts, and
    none of the inputs ``leave_out``."""
    rows = planned.filter(pc.is_valid(planned.column(Col.INPUT_URI))).select(TODO_COLUMNS)
    if leave_out:
        rows = rows.filter(pc.invert(pc.is_in(rows.column(Col.INPUT_URI), value_set=pa.array(sorted(leave_out)))))
    return rows


def tally_rows(planned: pa.Table) -> pa.Table:
    """The rows of counts of ``planned`` (:data:`PLANNED_SCHEMA`)."""
    return planned.filter(pc.is_null(planned.column(Col.INPUT_URI)))


def sum_counts(tables) -> dict[str, int]:
    """Each of :data:`COUNTS` summed over ``tables`` (:data:`PLANNED_SCHEMA`, or their rows of counts)."""
    totals = dict.fromkeys(COUNTS, 0)
    for t in tables:
        for c in COUNTS:
            totals[c] += int(pc.sum(t.column(f"n_{c}")).as_py() or 0)
    return totals
