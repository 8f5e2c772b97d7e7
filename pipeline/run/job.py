"""Assembling and running a restore job: list -> read -> decode -> restore -> encode/write -> stats.

Resources are decided here, once, from the spec: read and decode run as Ray tasks on the CPUs the model
actors leave free; the model runs on an ``ActorPoolStrategy`` pool with the spec's GPUs and CPUs per
actor. The driver only plans, then streams the small stats rows back and writes them to Parquet in parts
as it goes, so memory stays flat whatever the archive's size and an interrupted run keeps what it did.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import get_args

import pyarrow as pa
import pyarrow.compute as pc

from ..planning.plan import Plan, make_plan, unfinished_rows
from ..printable import printable
from ..rows import FAILED, STATS_SCHEMA, STOPPED
from ..spec import AUTO, RestoreSpec, Task
from ..stages.model import RestoreModel, restore_alone
from ..stages.model_set import ModelSet, resolve_auto, resolve_model
from ..stages.stop import close_and_take, start_flag
from ..stats import StatsFileError, StatsWriter
from ..storage import join_uri, write_bytes_atomic
from .adoption import adopt, adoption_candidates
from .compaction import maybe_compact, recover
from .lock import RunLock
from .metrics import RunMetrics, tag_dataset
from .report import ReportCollector, ranking_measure
from .shutdown import GracefulStop, Interrupted
from .summary import RunSummary, check_run_id
from .tally import RunTally

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def build_dataset(spec: RestoreSpec, rows, models: ModelSet, run_id: str, *, one_by_one: bool = False, stop=None):
    """The Ray Data pipeline over planned ``rows`` (a :class:`~pipeline.planning.plan.Plan`, or some of its rows as
    dicts); yields stats rows when iterated: read, decode, restore, write.

    A model actor that dies (killed, segfault, out of host memory) is restarted by Ray and its batch
    retried, at most ``resources.max_task_retries`` times; after that the batch is dropped instead of
    failing the run, and :func:`run_restore` accounts for its rows. ``one_by_one``: each image alone, in
    a task of its own, so that a batch that kept killing its actor is narrowed down to the image at fault.
    ``stop``: the run's :class:`~pipeline.stages.stop.StopFlag`; once raised, reading and the model start
    nothing new and drop their rows, while what is restored is still written (see :mod:`pipeline.run.shutdown`).
    """
    from .. import faults

    failpoints = faults.from_env()
    ds = _source(rows, one_by_one)
    ds = _read_and_decode(ds, spec, models, one_by_one=one_by_one, stop=stop)
    ds = _model_stage(ds, spec, models, one_by_one=one_by_one, stop=stop, failpoints=failpoints)
    return tag_dataset(_write(ds, spec, models, run_id, stop=stop, failpoints=failpoints), run_id)


def _source(rows, one_by_one: bool):
    """The planned rows as a dataset whose executions go on past dropped blocks (the run accounts for
    their rows itself), without changing the process's ``DataContext``: each dataset holds its own copy."""
    import ray

    if isinstance(rows, Plan):  # the plan's rows, in the object store: the driver never holds them
        ds = rows.dataset()
    else:
        # Narrowing down, every image is its own block: a model task gets a whole block, and a crash loses it.
        ds = ray.data.from_items(rows, override_num_blocks=len(rows) if one_by_one else None)
    ds.context.max_errored_blocks = -1  # shared by the datasets derived from this one
    return ds


def _read_and_decode(ds, spec: RestoreSpec, models: ModelSet, *, one_by_one: bool, stop):
    from ..stages.decode import decode_batch
    from ..stages.measure import measure_batch
    from ..stages.read import read_batch

    res, mb = spec.resources, spec.input.max_bytes
    ds = ds.map_batches(
        read_batch,
        fn_kwargs={"storage": spec.storage.options(), "threads": res.read_threads, "stop": stop, "max_bytes": mb},
        batch_size=1 if one_by_one else 16,
    )
    # One image per decode call: a huge image does not hold up (or share a block with) small ones.
    ds = ds.map_batches(decode_batch, fn_kwargs={"max_pixels": spec.input.max_pixels}, batch_size=1)
    # What degrades each image, for the gate, the router and the stats: a stage of its own, fused by Ray
    measure = {"estimates": models.estimates, "router": models.router}
    ds = ds.map_batches(measure_batch, fn_kwargs=measure, batch_size=1)
    # Blocks of one model batch: a model task then restores one batch and hands it on, so that images are
    # written as they are restored (not when a whole read block is), and a stopping run waits for one
    # batch per actor at most.
    return ds if one_by_one else ds.repartition(target_num_rows_per_block=res.batch_size)


def _model_stage(ds, spec: RestoreSpec, models: ModelSet, *, one_by_one: bool, stop, failpoints: dict):
    """The model stage: a pool of actors, one model each; or, narrowing down, one task per image."""
    import ray

    res = spec.resources
    model = {
        "models": models,
        "inference": spec.inference.overrides(),
        "threads": max(1, int(res.cpus_per_actor)),
        "use_gpu": res.gpus_per_actor > 0,
        "storage": spec.storage.options(),
        "failpoints": failpoints,
    }
    resources = {
        # Reserving memory for the model also keeps Ray Data from fusing the CPU read/decode stage into
        # the model actors (it fuses stages with identical resources), so decoding overlaps inference.
        "memory": int(res.memory_per_actor_gb * 2**30),
        "num_gpus": res.gpus_per_actor,
        "num_cpus": res.cpus_per_actor,
    }
    if one_by_one:
        # Plain tasks, each loading the model for one image: a crash loses that task alone, and a task's
        # resources are free again when it ends (a second actor pool could wait on the first's).
        return ds.map_batches(
            restore_alone,
            fn_kwargs=model,
            batch_size=1,
            ray_remote_args_fn=functools.partial(dict, max_retries=res.max_task_retries),
            **resources,
        )
    return ds.map_batches(
        RestoreModel,
        fn_constructor_kwargs={**model, "stop": stop},
        compute=ray.data.ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors),
        batch_size=res.batch_size,
        # Applied when each actor starts (Ray Data's default is to retry forever).
        ray_remote_args_fn=functools.partial(dict, max_task_retries=res.max_task_retries),
        **resources,
    )


def _write(ds, spec: RestoreSpec, models: ModelSet, run_id: str, *, stop, failpoints: dict):
    from ..stages.write import write_batch

    return ds.map_batches(
        write_batch,
        fn_kwargs={
            "run_id": run_id,
            "model": models.id,
            "storage": spec.storage.options(),
            "max_pixels": spec.input.max_pixels,
            "options": spec.output.encode_options(),
            "keep_metadata": spec.output.metadata,
            "failpoints": failpoints,
            "stop": stop,
        },
        # A model batch at a time (its block): one stop-flag call before its writes and one after.
        batch_size=spec.resources.batch_size,
    )


def model_set(spec: RestoreSpec) -> ModelSet:
    """The models of ``spec``'s run, checked on the driver before any work (see
    :func:`~pipeline.stages.model_set.resolve_model`): one, gated by the spec's gate over the weights'
    default; for ``task: auto``, every task's and the router (:func:`~pipeline.stages.model_set.resolve_auto`).

    Raises:
        CheckpointMismatchError: the weights do not fit the spec's arch and widths (their keys and shapes,
            or the arch or widths they record).
        NoBundledModelError: the spec gives no weights, and none ship for its task.
    """
    if spec.task == AUTO:
        from ..routing import Router

        storage = spec.storage.options()
        weights = {task: spec.auto.weights(task) for task in get_args(Task)}
        return resolve_auto(weights, Router.load(spec.auto.router, storage), storage)
    m = spec.model
    one = resolve_model(
        spec.task,
        arch=m.arch,
        weights=m.weights,
        storage=spec.storage.options(),
        n_feat=m.n_feat,
        scale_unetfeats=m.scale_unetfeats,
        scale_orsnetfeats=m.scale_orsnetfeats,
        depth=m.depth,
    )
    return ModelSet.one(one, spec.gate.settings(one.gate))  # the spec's gate over the weights' default


def run_restore(spec: RestoreSpec, *, run_id: str | None = None, models: ModelSet | None = None) -> RunSummary:
    """Run ``spec`` on the connected Ray cluster; writes images, stats and ``runs/<run_id>.json``.

    On SIGTERM or SIGINT (in the main thread), or when another run takes its lock over (as SIGTERM), the run stops
    within ``output.shutdown_grace_seconds``: no new work starts, the stats of every image written are kept, and the
    summary it returns (and writes) has ``interrupted`` set to the signal's name; see :mod:`pipeline.run.shutdown`.

    Args:
        models: the run's weights as :func:`model_set` checked them (None: checked here, before the lock).

    Raises:
        CheckpointMismatchError: the weights do not fit the spec's model; nothing was listed or written.
        LockedError: another run is writing to the same output prefix.
    """
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    models = models or model_set(spec)
    lock = RunLock(spec.output.uri, run_id, spec.storage.options(), stale_after=spec.output.lock_stale_minutes * 60)
    with GracefulStop(spec.output.shutdown_grace_seconds) as stop, lock.on_loss(stop.request):
        return _run_locked(spec, run_id, models, stop, lock)


def _run_locked(spec: RestoreSpec, run_id: str, models: ModelSet, stop: GracefulStop, lock: RunLock):
    storage = spec.storage.options()
    summary = RunSummary(
        run_id=run_id,
        model=models.id,
        input_uri=spec.input.uri,
        output_uri=spec.output.uri,
        dashboard_url=_dashboard_url(),
    )
    recover(spec.output.uri, storage)  # a compaction that did not end is finished or undone first
    plan, flag = _plan(spec, models, stop, summary)
    if flag is not None:
        stop.on_stop(flag.set.remote)
    t0 = time.perf_counter()
    writer = StatsWriter(
        spec.output.uri,
        run_id,
        storage=storage,
        part_rows=spec.output.stats_part_rows,
        # Parts record the input prefix they were planned from (not a manifest's), for the next plan.
        input_uri=None if spec.input.manifest else spec.input.uri,
        on_rows=RunMetrics(run_id, task=spec.task).record,  # every row recorded, counted once for Ray's metrics
    )
    tally, report = RunTally(), None
    if spec.output.report:
        rank = ranking_measure(spec.task, paired=bool(spec.input.reference))
        report = ReportCollector(start=time.time(), rank=rank, sample=spec.output.report_samples)
    if plan is not None and plan.planned and not stop.requested:
        _adopt(plan, models, run_id, storage, writer, summary)
    try:
        if plan is not None and not stop.requested:
            _restore(spec, plan, models, run_id, summary, stop, flag, writer, tally, report)
    finally:
        if flag is not None:  # an actor is a process: runs in one driver (tests, notebooks) must not pile them up
            import ray

            ray.kill(flag)
    writer.flush()
    summary.interrupted = stop.signal_name
    summary.wall_seconds = time.perf_counter() - t0
    summary.stats_files = writer.parts
    summary.ok, summary.failed = tally.ok, tally.failed
    summary.megapixels, summary.failures = tally.megapixels, tally.failures[:100]
    summary.metrics = tally.metrics()
    if report is not None and not summary.interrupted:  # a stopping run spends its grace on the stats
        _write_report(spec, report, summary, tally)
    if not summary.interrupted and lock.still_held():  # compaction deletes files: only while the lock is ours
        summary.compaction = _compact(spec, run_id)
    write_bytes_atomic(join_uri(spec.output.uri, "runs", f"{run_id}.json"), summary.to_json().encode(), storage)
    return summary


def _adopt(plan: Plan, models: ModelSet, run_id: str, storage, writer: StatsWriter, summary: RunSummary) -> None:
    """Outputs written by an earlier run that never recorded them, adopted: their rows are written now and
    their inputs left out of the plan (see :mod:`pipeline.run.adoption`)."""
    adopted = adopt(adoption_candidates(plan), model=models.id, run_id=run_id, storage=storage)
    if adopted.num_rows:
        writer.add(adopted)
        plan.adopt(frozenset(adopted.column("input_uri").to_pylist()))
        summary.adopted = adopted.num_rows


def _compact(spec: RestoreSpec, run_id: str) -> dict | None:
    """The earlier runs' stats parts merged, where there are more than ``stats.compact_after``. A file
    that is not a stats part stops the compaction, not the run (the next plan names it)."""
    try:
        done = maybe_compact(
            spec.output.uri,
            storage=spec.storage.options(),
            run_id=run_id,
            input_uri=None if spec.input.manifest else spec.input.uri,
            after=spec.stats.compact_after,
            history_days=spec.stats.history_days,
        )
    except StatsFileError as exc:
        log.error("Stats not compacted: %s", exc)
        return None
    return done.to_dict() if done else None


def _plan(spec: RestoreSpec, models: ModelSet, stop: GracefulStop, summary: RunSummary):
    """The run's plan and its stop flag (None where there is nothing to restore), its counts put in
    ``summary``; ``(None, None)`` when the run is stopped while planning."""
    try:
        with stop.region("any"):  # nothing is lost by stopping while planning
            plan = make_plan(
                input_uri=spec.input.uri,
                output_uri=spec.output.uri,
                model=models.id,
                storage=spec.storage.options(),
                manifest=spec.input.manifest,
                reference=spec.input.reference,
                output_format=spec.output.format,
            )
            flag = start_flag() if plan.planned else None
    except Interrupted:
        return None, None
    summary.listed, summary.skipped, summary.still_bad = plan.listed, plan.skipped, plan.still_bad
    summary.changed, summary.vanished, summary.plan_seconds = plan.changed, plan.vanished, plan.seconds
    summary.reformatted = plan.reformatted
    return plan, flag


def _write_report(spec: RestoreSpec, report: ReportCollector, summary: RunSummary, tally: RunTally) -> None:
    """``reports/<run_id>.html``; a report that fails is logged and does not fail the run (the images
    and stats are written)."""
    storage = spec.storage.options()
    uri = join_uri(spec.output.uri, "reports", f"{summary.run_id}.html")
    try:
        page = report.render(summary, tally, max_pixels=spec.input.max_pixels, storage=storage)
        write_bytes_atomic(uri, page.encode(), storage)
        summary.report_uri = uri
    except Exception:
        log.exception("Could not write the run report %s.", printable(uri))


def _restore(
    spec: RestoreSpec,
    plan: Plan,
    models: ModelSet,
    run_id: str,
    summary: RunSummary,
    stop: GracefulStop,
    flag,
    writer: StatsWriter,
    tally: RunTally,
    report: ReportCollector | None,
) -> None:
    """Run the pipeline over the plan's rows, taking their stats rows as they come; a second pass takes
    the images lost with workers that died, one at a time. Stopping, it takes what finishes until the
    pipeline drains or the drain deadline passes, and tries nothing again."""
    account = functools.partial(_account, writer=writer, tally=tally, report=report)
    lost: Plan | list[dict] = plan if plan.planned else []
    for one_by_one in (False, True):
        if not lost or stop.requested:
            break
        if one_by_one:
            log.warning("%d images were lost with workers that died; retrying them one at a time.", len(lost))
        # Which inputs came back: counted over the plan (the driver holds no set of the archive's names),
        # named over the few retried one at a time.
        ds = build_dataset(spec, lost, models, run_id, one_by_one=one_by_one, stop=flag)
        received, named = _stream(ds, stop=stop, flag=flag, account=account, summary=summary, name_rows=one_by_one)
        if stop.requested:  # a stopping run tries nothing again (the next run plans what is missing), and
            break  # its grace is for the stats and summary, not for streaming the plan once more
        # The rows that came back as no stats row (every pipeline row ends as one unless its worker died).
        if isinstance(lost, Plan):
            if received >= plan.planned:
                lost = []
            else:
                writer.flush()  # the stats parts then hold every row received
                lost = unfinished_rows(plan, writer.parts, spec.storage.options())
        else:
            lost = [row for row in lost if row["input_uri"] not in named]
    if flag is not None and stop.requested:
        # Rows of images written that the pipeline had not delivered by the drain deadline: the write stage
        # handed each to the stop flag too, which forgets those the driver says it has (in call order).
        # Closed first, so that no image is written after its rows are taken; writes under way get a
        # little of the reserve (a hung one keeps none: its task ends with the driver).
        written, writing = close_and_take(flag, wait=stop.reserve / 4)
        if writing:
            log.warning(
                "%d images were still being written at the drain deadline; the next run writes them again.", writing
            )
        if written:
            account(pa.Table.from_pylist([{k: r.get(k) for k in STATS_SCHEMA.names} for r in written], STATS_SCHEMA))
    if lost and not stop.requested:  # every input ends as a row: these killed their worker every time
        reason = (
            f"model: the worker died on every attempt ({spec.resources.max_task_retries + 1} with this image alone)"
        )
        account(_failed_rows(lost, run_id, models.id, reason))


def _stream(ds, *, stop: GracefulStop, flag, account, summary: RunSummary, name_rows: bool) -> tuple[int, set]:
    """Take a pass's stats rows as they come, until the pipeline drains or (stopping) the drain deadline
    passes; how many came back, and their input URIs where ``name_rows``."""
    received, named = 0, set()
    batches = iter(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    try:
        while not stop.drain_over:
            try:
                with stop.region("wait"):
                    table = next(batches)
            except (StopIteration, Interrupted):
                break
            account(table)
            received += table.num_rows
            if name_rows:
                named.update(table.column("input_uri").to_pylist())
            if flag is not None:  # the flag holds these rows until now
                flag.delivered.remote(table.column("input_uri").to_pylist())
    finally:
        batches.close()  # shuts Ray Data's executor down now, also when the drain was cut short
    try:
        summary.execution_stats.append(ds.stats())
    except Exception as exc:  # stats of an execution cut short; the run's own results are what count
        log.warning("No Ray Data stats for this pass: %s", exc)
    return received, named


def _account(table: pa.Table, *, writer: StatsWriter, tally: RunTally, report: ReportCollector | None) -> None:
    """Take a batch of stats rows into the stats files, the summary's tally and the report (when the run
    draws one)."""
    table = table.select(STATS_SCHEMA.names).cast(STATS_SCHEMA)
    table = table.filter(pc.not_equal(table["status"], STOPPED))  # not started: planned again next run
    writer.add(table)
    tally.add(table)
    if report is not None:
        report.add(table)


def _failed_rows(rows: list[dict], run_id: str, model: str, reason: str) -> pa.Table:
    now = datetime.now(timezone.utc)
    columns = {name: [None] * len(rows) for name in STATS_SCHEMA.names}
    columns.update(
        run_id=[run_id] * len(rows),
        input_uri=[r["input_uri"] for r in rows],
        input_bytes=[r.get("size") for r in rows],
        input_version=[r.get("version") or None for r in rows],
        model=[model] * len(rows),
        status=[FAILED] * len(rows),
        error=[reason] * len(rows),
        finished_at=[now] * len(rows),
    )
    return pa.table(columns, schema=STATS_SCHEMA)


def _dashboard_url() -> str | None:
    """The Ray dashboard's URL, when the cluster runs one (a local Ray started by the job does not)."""
    try:
        import ray
        from ray._private.worker import get_dashboard_url  # what ray.init reports; no public accessor in 2.60

        url = get_dashboard_url() if ray.is_initialized() else None
    except Exception:
        return None
    return f"http://{url}" if url and "://" not in url else url or None
