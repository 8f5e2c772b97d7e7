"""Planning a run: list the inputs, name their outputs, skip what is already done.

One concept per file, in the order a plan is made:

- :mod:`.columns`: the tables that flow between the steps; the plan's rows are the pipeline's planned
  columns (:class:`pipeline.rows.Col`);
- :mod:`.names`: output names and formats, and which inputs could want one name;
- :mod:`.listing`: a prefix listed in shards, or a manifest's entries described;
- :mod:`.earlier`: the earlier stats rows of the model, and whether one is about the version listed now;
- :mod:`.settle`: the skipping and naming rules, in two steps;
- :mod:`.colocated`: planning shards whole where the earlier stats are laid out for it (no shuffle);
- :mod:`.executors`: in this process, or as one Ray Data computation;
- :mod:`.plan`: :func:`~.plan.make_plan` and the :class:`~.plan.Plan` it returns, the three strategies
  described once.

The stats parts that planning reads back are laid out by :mod:`pipeline.stats`.

A run is incremental: an input is skipped when the latest stats row of the same model is about the same
version of it (:attr:`~pipeline.storage.StoredObject.version`: ETag, size and last-modified from the
listing, size and mtime for local files, a content hash where the store gives neither) and is ``ok`` with
its output present, or failed to decode. A re-run over an unchanged archive does no work; new uploads and
overwritten inputs (whatever their size) are restored, other failures are retried. An output in another
format than the one asked for now is a change of output: the input is restored again into a new name
(``reformatted``; the old file stays). Inputs that earlier runs saw and that are gone now are counted as
``vanished``; their outputs stay. When two inputs would get one name (``a.jpg`` and ``a.png``), the first
to claim it keeps it (earlier runs claim first, then inputs in URI order, or a manifest's order) and the
others get ``<name>.<ext>.png``, so nothing is overwritten and names stay stable from run to run.
"""
