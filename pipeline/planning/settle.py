"""Settling the plan: what each input found now needs, in two steps that each see all they depend on.

1. :func:`settle_inputs`, on rows (:data:`~pipeline.planning.columns.INPUT_SCHEMA`) partitioned by
   ``input_uri``: an input's listing row meets its earlier stats rows; the latest earlier row decides
   whether the version is the one restored before, and routes the input to step 2 by the name it keeps
   or else by its first name. Undecodable unchanged inputs and vanished ones are counted here.
2. :func:`settle_names`, on rows (:data:`~pipeline.planning.columns.ROUTED_SCHEMA`) partitioned by
   :func:`~pipeline.planning.names.name_key`: an input meets the earlier claims on the names it could take
   and the outputs present under them; what is done is skipped, the rest named, everything counted.

The skipping rules live here (with :func:`~pipeline.planning.earlier.same_version`): an input is skipped
when the latest stats row of the same model is about the same version of it and is ``ok`` with its output
present in the format asked for, or failed to decode. Every partitioning gives the same plan.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from ..printable import printable
from ..stages.encode import format_of
from ..storage import StorageOptions, StoredObject, content_version, join_uri, read_bytes
from .columns import (
    CLAIM,
    COUNTS,
    EARLIER,
    LISTED,
    MISSING,
    PLANNED_SCHEMA,
    PRESENT,
    RECORD,
    ROUTED_SCHEMA,
    TALLY,
    TODO_COLUMNS,
    conform,
)
from .earlier import Earlier, same_version
from .names import inside, name_key, output_format_for, output_names, relative_key, under

log = logging.getLogger(__name__)


def settle_inputs(
    part: pa.Table,
    *,
    input_uri: str,
    output_uri: str,
    output_format: str,
    reference: str | None,
    manifest: bool,
    storage: StorageOptions,
    present: set[str] | None = None,
) -> pa.Table:
    """Step 1, on rows (:data:`INPUT_SCHEMA`) hashed by ``input_uri``: every listing row and earlier row
    of an input are in ``part``. Returns step 2's rows (:data:`ROUTED_SCHEMA`): a record per input to
    decide, keyed by the name it keeps or else by its first name; a claim per earlier ``ok`` row on its
    output; one row of counts. ``present``: the outputs there now, where this partition holds every one
    that its inputs could have (:func:`~pipeline.planning.colocated.plan_shards`): inputs done are then
    skipped here, as step 2 would skip them."""
    now, earlier = _now_and_earlier(part)
    earlier = trusted_rows(earlier, output_uri=output_uri)
    content = _hash_unversioned(now, earlier, storage)
    out: dict[str, list] = {name: [] for name in ROUTED_SCHEMA.names}
    counts = dict.fromkeys(COUNTS, 0)
    claims = [(uri, e.output_uri) for uri, e in earlier.items() if e.ok and e.output_uri]
    # The name each input owns, also while it is gone.
    out["name_key"] += [name_key(o) for _, o in claims]
    out["input_uri"] += [u for u, _ in claims]
    out["output_uri"] += [o for _, o in claims]
    out["kind"] += [CLAIM] * len(claims)
    for name in ROUTED_SCHEMA.names:
        out[name].extend([None] * (len(claims) - len(out[name])))
    if not manifest:
        counts["vanished"] += sum(1 for uri in earlier if uri not in now and under(uri, input_uri))
    _records(out, counts, now, earlier, content, input_uri, output_uri, output_format, reference, present)
    _emit(out, name_key="", kind=TALLY, **{f"n_{c}": v for c, v in counts.items()})
    return pa.table(out, schema=ROUTED_SCHEMA)


def _now_and_earlier(part: pa.Table) -> tuple[dict[str, dict], dict[str, Earlier]]:
    """``part``'s rows of each input as found now (listed, or a manifest entry missing), and the latest
    earlier stats row of each (by ``finished_at``; a row without one counts as the latest, as Arrow sorts
    nulls last)."""
    is_earlier = pc.equal(part.column("kind"), EARLIER)
    now = {r["input_uri"]: r for r in part.filter(pc.invert(is_earlier)).to_pylist()}
    rows = part.filter(is_earlier)
    uris, finished = rows.column("input_uri").to_pylist(), rows.column("e_finished").to_pylist()
    latest: dict[str, int] = {}
    for i, (uri, f) in enumerate(zip(uris, finished)):
        j = latest.get(uri)
        if j is None or (f is None, f or 0.0) > (finished[j] is None, finished[j] or 0.0):
            latest[uri] = i
    cols = {c: rows.column(c).to_pylist() for c in ("e_ok", "e_output_uri", "e_undecodable", "version", "size")}
    earlier = {
        uri: Earlier(
            ok=bool(cols["e_ok"][i]),
            output_uri=cols["e_output_uri"][i],
            undecodable=bool(cols["e_undecodable"][i]),
            version=cols["version"][i],
            size=cols["size"][i],
            finished_at=finished[i],
        )
        for uri, i in latest.items()
    }
    return now, earlier


def trusted_rows(earlier: dict[str, Earlier], *, output_uri: str) -> dict[str, Earlier]:
    """The ``earlier`` rows whose ``output_uri`` is empty or lies under this output's ``images/``. The stats
    are files in the output prefix, which others may write: a row naming a file elsewhere is ignored, with a
    warning naming it (else its input's next output would be written there), and its input planned anew."""
    images = join_uri(output_uri, "images")
    kept = {}
    for uri, e in earlier.items():
        if e.output_uri and not inside(e.output_uri, images):
            log.warning(
                "Ignored the earlier stats row of %s: its output_uri %s is not under %s.",
                printable(uri),
                printable(e.output_uri),
                printable(images),
            )
            continue
        kept[uri] = e
    return kept


def _hash_unversioned(now: dict[str, dict], earlier: dict, storage: StorageOptions) -> dict[str, str]:
    """Stores that describe no version: the inputs that an earlier row could vouch for, by content hash."""
    to_hash = [
        uri
        for uri, r in now.items()
        if r["kind"] == LISTED
        and not r["version"]
        and (e := earlier.get(uri))
        and (e.version or "").startswith("sha256:")
    ]
    if not to_hash:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(to_hash))) as pool:
        return dict(zip(to_hash, pool.map(lambda u: content_version(read_bytes(u, storage)), to_hash)))


def _emit(out: dict[str, list], **row) -> None:
    for name in ROUTED_SCHEMA.names:
        out[name].append(row.get(name))


def _records(out, counts, now, earlier, content, input_uri, output_uri, output_format, reference, present) -> None:
    """A record per input found now, appended to ``out`` a column at a time (the hot loop of a first
    run), with the counts of what is new, what changed, what was reformatted or failed before and is tried
    again, what vanished or is still bad."""
    images = join_uri(output_uri, "images").rstrip("/") + "/"  # + a safe relative key: join_uri, faster
    cols = [out[name] for name in ("name_key", "kind", "input_uri", "order", "size", "version", "output_uri")]
    cols += [out[name] for name in ("same", "rel", "format", "reference_uri")]
    n_key, n_kind, n_uri, n_order, n_size, n_version, n_out, n_same, n_rel, n_format, n_ref = cols
    for uri, r in now.items():
        e = earlier.get(uri)
        if r["kind"] == MISSING:
            if e is not None:
                counts["vanished"] += 1
                continue
            # A missing manifest entry that was never tried is planned, and fails with the reason.
        counts["listed"] += 1
        rel = relative_key(uri, input_uri)
        fmt = output_format_for(rel, output_format)
        if e is None:
            same = same_format = False
            counts["new"] += 1
        else:
            obj = StoredObject(uri, r["size"] or 0, r["version"] or "", r["modified"])
            same = same_version(e, obj, content=content.get(uri))
            same_format = e.ok and format_of(e.output_uri) == fmt
            if same and e.undecodable:
                counts["still_bad"] += 1  # the same bytes failed to decode before: no use trying again
                continue
            # Neither counts an input that is skipped: skipping takes the same version in the same format.
            counts["changed"] += (e.ok or e.undecodable) and not same
            counts["reformatted"] += same and e.ok and not same_format
            counts["retried"] += not e.ok and not e.undecodable  # failed before, not to decode: tried again
        keep = e.output_uri if same_format else None  # re-doing a changed input or a missing output: its name
        if present is not None and keep is not None and same and keep in present:
            counts["skipped"] += 1  # done: its claim keeps the name
            continue
        n_key.append(name_key(keep or images + rel))
        n_kind.append(RECORD)
        n_uri.append(uri)
        n_order.append(r["order"])
        n_size.append(r["size"] or 0)
        n_version.append(r["version"] or "")
        n_out.append(keep)
        n_same.append(same)
        n_rel.append(rel)
        n_format.append(fmt)
        n_ref.append(join_uri(reference, rel) if reference else "")
    for name in ROUTED_SCHEMA.names:  # the columns records leave empty
        if len(out[name]) < len(n_uri):
            out[name].extend([None] * (len(n_uri) - len(out[name])))


def present_outputs(listed: pa.Table) -> pa.Table:
    """The listing of ``<output>/images`` (:data:`~pipeline.planning.columns.LISTED_SCHEMA`) as step 2's rows."""
    uris = listed.column("uri").to_pylist()
    n = len(uris)
    return conform(
        {
            "name_key": pa.array([name_key(u) for u in uris], pa.string()),
            "kind": pa.array([PRESENT] * n, pa.int8()),
            "output_uri": listed.column("uri"),
        },
        n,
        ROUTED_SCHEMA,
    )


def settle_names(part: pa.Table, *, output_uri: str, present: set[str] | None = None) -> pa.Table:
    """Step 2, on rows (:data:`ROUTED_SCHEMA`) hashed by ``name_key``: skip the inputs whose output is
    there, name the others, and count. Returns :data:`PLANNED_SCHEMA` rows; an input whose output name
    is taken by a file that no stats row accounts for is marked ``output_present`` (the driver may adopt
    it). ``present``: the outputs there, where ``part`` holds no rows of them (planning shards whole).

    When two inputs would get one name (``a.jpg`` and ``a.png``), the first to claim it keeps it (earlier
    runs claim first, then inputs in URI order, or a manifest's order) and the others get
    ``<name>.<ext>.<new ext>``, so nothing is overwritten and names stay stable from run to run.
    """
    claimed: dict[str, str] = {}  # output name -> input that owns it
    present = set(present or ())
    counts = dict.fromkeys(COUNTS, 0)
    kinds = part.column("kind").to_pylist()
    uris = part.column("input_uri").to_pylist()
    outs = part.column("output_uri").to_pylist()
    records = []
    for i, kind in enumerate(kinds):
        if kind == CLAIM:
            claimed[outs[i]] = uris[i]
        elif kind == PRESENT:
            present.add(outs[i])
        elif kind == RECORD:
            records.append(i)
    tallies = part.filter(pc.equal(part.column("kind"), TALLY))
    for c in COUNTS:
        counts[c] += pc.sum(tallies.column(f"n_{c}")).as_py() or 0
    cols = {name: part.column(name).to_pylist() for name in ("order", "size", "version", "same", "rel", "format")}
    refs = part.column("reference_uri").to_pylist()
    del part, tallies
    orders = cols["order"]
    records.sort(key=lambda i: (orders[i], uris[i]))
    images = join_uri(output_uri, "images").rstrip("/") + "/"
    out: dict[str, list] = {name: [] for name in PLANNED_SCHEMA.names}
    o_uri, o_size, o_version, o_out, o_ref, o_present = (out[name] for name in TODO_COLUMNS)
    same, sizes, versions, rels, formats = cols["same"], cols["size"], cols["version"], cols["rel"], cols["format"]
    for i in records:
        uri, keep = uris[i], outs[i]
        if keep is not None and same[i] and keep in present:
            counts["skipped"] += 1
            continue
        if keep is None:
            keep = next(
                o for o in (images + name for name in output_names(rels[i], formats[i])) if claimed.get(o, uri) == uri
            )
        claimed[keep] = uri
        counts["todo"] += 1
        o_uri.append(uri)
        o_size.append(sizes[i])
        o_version.append(versions[i])
        o_out.append(keep)
        o_ref.append(refs[i])
        o_present.append(keep in present)
    for c in COUNTS:
        out[f"n_{c}"].extend([0] * len(o_uri))
    for name in TODO_COLUMNS:
        out[name].append(None)
    for c in COUNTS:
        out[f"n_{c}"].append(counts[c])
    return pa.table(out, schema=PLANNED_SCHEMA)
