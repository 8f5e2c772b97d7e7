"""A dry run: what a run would do, before it does it (rsync ``-n``, ``aws s3 sync --dryrun``).

It plans exactly as a run plans (:func:`~pipeline.planning.plan.make_plan`: the listing, the earlier stats
rows, versions and formats) and reads the provenance of the outputs a run would adopt
(:mod:`pipeline.run.adoption`), but takes no lock, recovers no compaction and writes nothing under the output
prefix. It counts what the run's summary would (new, changed, reformatted, failed before and tried again,
skipped, still bad, vanished, to adopt), sums the bytes to restore per top-level input folder, reads image
headers for the megapixels (every planned image up to :data:`HEADER_SAMPLE`, else an even sample of that
many, scaled by bytes), and estimates the model's time and cost (:mod:`pipeline.run.estimate`). Under
``task: auto`` nothing is decoded: routes are known only once a run measures each image.

Without a Ray address it plans in this process (no Ray started: the same steps, one partition); with
``--address`` or ``RAY_ADDRESS`` it plans on that cluster as the run would.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from ..planning.names import relative_key
from ..printable import printable
from ..rows import Col
from ..spec import AUTO, RestoreSpec
from ..storage import filesystem, read_head, split_protocol
from .estimate import estimate

log = logging.getLogger(__name__)

HEADER_SAMPLE = 1000  # image headers read at most, for the megapixels
HEADER_BYTES = 256 * 1024  # read from the start of each: a header, and EXIF blocks before JPEG's frame header
TOP = "."  # the folder of files directly under the input prefix


@dataclass
class DryRun:
    """What a run of the spec would do now; written as JSON by :meth:`to_json`."""

    input_uri: str
    output_uri: str
    model: str
    task: str
    listed: int
    to_restore: int  # planned, less the outputs to adopt
    new: int
    changed: int
    reformatted: int
    retried: int  # failed before (not to decode), tried again
    output_missing: int  # done before, but its output is gone: restored again
    skipped: int
    still_bad: int
    vanished: int
    to_adopt: int
    bytes: int = 0
    megapixels: float | None = None
    megapixels_from: str = ""
    folders: dict[str, dict] = field(default_factory=dict)  # top-level folder -> images, bytes, megapixels
    actors: dict[str, int] = field(default_factory=dict)
    estimate: dict | None = None
    routes: str | None = None
    plan_seconds: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def render(self) -> str:
        lines = [
            f"DRY RUN  model {self.model}  (no lock taken, nothing written under the output)",
            f"  input    {printable(self.input_uri)}  ({self.listed} images listed)",
            f"  output   {printable(self.output_uri)}",
            f"  would restore {self.to_restore}: {self.new} new, {self.changed} changed since restored, "
            f"{self.reformatted} into a new format, {self.retried} failed before and tried again, "
            f"{self.output_missing} whose output is gone",
            f"  would skip {self.skipped} already done, {self.still_bad} undecodable before and unchanged; "
            f"{self.vanished} vanished; {self.to_adopt} to adopt (written before, never recorded)",
            f"  to restore: {_size(self.bytes)}, {_megapixels(self.megapixels)} ({self.megapixels_from})",
        ]
        for name, f in sorted(self.folders.items()):
            lines.append(
                f"    {printable(name):<24} {f['images']:>8} images  {_size(f['bytes']):>10}  "
                f"{_megapixels(f['megapixels'])}"
            )
        if self.routes:
            lines.append(f"  routes   {self.routes}")
        e = self.estimate or {}
        if e:
            cost = f", {e['cost']:.2f} at {e['price_per_hour']:g} an actor-hour" if e["cost"] is not None else ""
            lines += [
                f"  estimate {_duration(e['seconds'])} of model time on {e['actors']} {e['device']} actors "
                f"({e['actor_hours']:.2f} actor-hours{cost}), at {e['seconds_per_megapixel']:.3g} s/MP",
                f"    from: {e['source']}",
            ]
            if e["note"]:
                lines.append(f"    note: {e['note']}")
        lines.append(f"  planned in {self.plan_seconds:.1f} s; dry run {self.seconds:.1f} s")
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _megapixels(mp: float | None) -> str:
    return "? MP" if mp is None else f"{mp:.1f} MP"


def dry_run(spec: RestoreSpec, ref, *, price_per_hour: float | None = None, distributed: bool | None = None) -> DryRun:
    """Plan ``spec`` as a run would (``ref``: its model, :func:`pipeline.run.job.model_set`) and say what the
    run would do; nothing is written, no lock taken."""
    from ..planning.plan import make_plan

    t0 = time.perf_counter()
    storage = spec.storage.options()
    plan = make_plan(
        input_uri=spec.input.uri,
        output_uri=spec.output.uri,
        model=ref.id,
        storage=storage,
        manifest=spec.input.manifest,
        reference=spec.input.reference,
        output_format=spec.output.format,
        distributed=distributed,
    )
    to_adopt = _adopt(plan, ref.id, storage)
    res = spec.resources
    out = DryRun(
        input_uri=spec.input.uri,
        output_uri=spec.output.uri,
        model=ref.id,
        task=spec.task,
        listed=plan.listed,
        to_restore=plan.planned,
        new=plan.new,
        changed=plan.changed,
        reformatted=plan.reformatted,
        retried=plan.retried,
        output_missing=plan.planned + to_adopt - plan.new - plan.changed - plan.reformatted - plan.retried,
        skipped=plan.skipped,
        still_bad=plan.still_bad,
        vanished=plan.vanished,
        to_adopt=to_adopt,
        actors={"min": res.min_actors, "max": res.max_actors},
        routes="unknown until the run: task auto routes each image once it is decoded" if spec.task == AUTO else None,
        plan_seconds=plan.seconds,
    )
    _measure(out, plan, spec)
    if out.megapixels is not None:
        est = estimate(
            megapixels=out.megapixels,
            task=spec.task,
            gpus_per_actor=res.gpus_per_actor,
            actors=res.max_actors,
            price_per_hour=price_per_hour,
        )
        out.estimate = est.to_dict()
    out.seconds = time.perf_counter() - t0
    return out


def _adopt(plan, model: str, storage) -> int:
    """How many outputs a run would adopt (their provenance read, as the run reads it); left out of the plan."""
    from .adoption import adopt, adoption_candidates

    if not plan.planned:
        return 0
    adopted = adopt(adoption_candidates(plan), model=model, run_id="dry-run", storage=storage)
    if adopted.num_rows:
        plan.adopt(frozenset(adopted.column("input_uri").to_pylist()))
    return adopted.num_rows


def _batches(plan):
    """The plan's rows to restore, as Arrow tables (from the object store when planned on Ray)."""
    if plan.blocks is None:
        rows = [r for r in plan.rows or [] if r[Col.INPUT_URI] not in plan.adopted]
        yield pa.Table.from_pylist(rows) if rows else None
        return
    yield from plan.dataset().iter_batches(batch_format="pyarrow", batch_size=None)


def _measure(out: DryRun, plan, spec: RestoreSpec) -> None:
    """Bytes per top-level folder over every row to restore, and megapixels from the headers of an even
    sample of them (:data:`HEADER_SAMPLE`), scaled by bytes where not every header was read."""
    stride = max(1, math.ceil(plan.planned / HEADER_SAMPLE))
    sample: list[tuple[str, str, int]] = []
    seen = 0
    for table in _batches(plan):
        if table is None or not table.num_rows:
            continue
        for uri, size in zip(table.column(Col.INPUT_URI).to_pylist(), table.column(Col.SIZE).to_pylist()):
            rel = relative_key(uri, spec.input.uri)
            top = rel.split("/", 1)[0] if "/" in rel else TOP
            f = out.folders.setdefault(top, {"images": 0, "bytes": 0, "megapixels": 0.0, "_mp": 0.0, "_b": 0})
            f["images"] += 1
            f["bytes"] += size or 0
            if seen % stride == 0:
                sample.append((uri, top, size or 0))
            seen += 1
    out.bytes = sum(f["bytes"] for f in out.folders.values())
    sizes = _header_megapixels([u for u, _, _ in sample], spec)
    read = [(top, b, mp) for (_, top, b), mp in zip(sample, sizes) if mp is not None]
    for top, b, mp in read:
        out.folders[top]["_mp"] += mp
        out.folders[top]["_b"] += b
    total_mp, total_b = sum(mp for _, _, mp in read), sum(b for _, b, _ in read)
    for f in out.folders.values():
        mp, b = f.pop("_mp"), f.pop("_b")
        ratio = mp / b if b else (total_mp / total_b if total_b else None)  # a folder's own headers first
        f["megapixels"] = None if ratio is None else (mp if len(read) == seen else f["bytes"] * ratio)
    if not seen:
        out.megapixels, out.megapixels_from = 0.0, "nothing to restore"
    elif not read:
        out.megapixels, out.megapixels_from = None, "bytes only: no image header could be read"
    else:
        known = [f["megapixels"] for f in out.folders.values() if f["megapixels"] is not None]
        out.megapixels = sum(known)
        whole = len(read) == seen
        out.megapixels_from = (
            f"from the headers of all {seen} images"
            if whole
            else f"from the headers of {len(read)} of {seen} images, scaled by bytes per folder"
        )


def _header_megapixels(uris: list[str], spec: RestoreSpec) -> list[float | None]:
    """Each image's megapixels from its header (no pixels decoded); None where it cannot be read."""
    from ..stages.formats import open_image

    storage = spec.storage.options()

    def one(uri: str) -> float | None:
        try:
            fs, _ = filesystem(uri, storage)
            with open_image(read_head(uri, fs, HEADER_BYTES)) as img:
                w, h = img.size
            return w * h / 1e6
        except Exception:  # truncated before its size (a TIFF whose directory is at the end), or not an image
            return None

    if not uris:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(uris))) as pool:
        return list(pool.map(one, uris))


def dry_run_main(spec: RestoreSpec, args: argparse.Namespace) -> int:
    """The command's ``--dry-run``: the checks a run makes first (exit 2 as a run), then :func:`dry_run`,
    printed, and written as JSON where ``--dry-run-json`` says (``-``: stdout, the text then on stderr)."""
    from .cli import checked_ref

    path = args.dry_run_json
    if path and path != "-" and _inside(path, spec.output.uri):
        print(
            f"--dry-run-json: expected a path outside output.uri ({spec.output.uri}), but got {path} instead: "
            "a dry run writes nothing under the output.",
            file=sys.stderr,
        )
        return 2
    if args.price_per_hour is not None and args.price_per_hour < 0:
        print(f"--price-per-hour: expected a price >= 0, but got {args.price_per_hour} instead.", file=sys.stderr)
        return 2
    ref = checked_ref(spec, args, write=False)
    if isinstance(ref, int):
        return ref
    distributed = bool(args.address or os.environ.get("RAY_ADDRESS"))
    if distributed and (code := _connect(args)) is not None:
        return code
    result = dry_run(spec, ref, price_per_hour=args.price_per_hour, distributed=distributed)
    print(result.render(), file=sys.stderr if path == "-" else sys.stdout)
    if path == "-":
        print(result.to_json())
    elif path:
        _write(path, result.to_json().encode(), spec)
    return 0


def _connect(args: argparse.Namespace) -> int | None:
    """Join the cluster named (``--address``, ``RAY_ADDRESS``) to plan on it as the run would; an exit code
    (2) where it cannot be joined."""
    from .ray_env import RayAccessError, init_ray
    from .ray_version import RayVersionError, check_ray_version

    try:
        check_ray_version()
        init_ray(args.address, auth=not args.local_ray_no_auth)
    except (RayAccessError, RayVersionError) as err:
        print(err, file=sys.stderr)
        return 2
    return None


def _inside(path: str, output_uri: str) -> bool:
    """Whether ``path`` (a local path or a URI) is ``output_uri`` or lies below it, links and ``..``
    resolved for local paths."""
    (p1, a), (p2, b) = split_protocol(path), split_protocol(output_uri)
    if p1 != p2:
        return False
    if p1 == "file":
        a, b = os.path.realpath(a), os.path.realpath(b)
    b = b.rstrip("/")
    return a == b or a.startswith(b + "/")


def _write(path: str, data: bytes, spec: RestoreSpec) -> None:
    from ..storage import write_bytes_atomic

    protocol, local = split_protocol(path)
    if protocol == "file":
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    write_bytes_atomic(path, data, spec.storage.options())
