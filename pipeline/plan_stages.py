"""The stages of planning, as functions of Arrow tables that Ray Data runs on the cluster's workers.

:func:`pipeline.plan.make_plan` chains them (or, without Ray, runs them in this process on one
partition):

1. :func:`list_top` and :func:`list_shards`: the prefix's first level cut into shards (each folder a
   shard listed recursively, the files directly under the prefix one more), each shard listed by a task.
2. :func:`read_stats`: the earlier stats rows of this model, one task per Parquet file.
3. :func:`settle_inputs`, on partitions hashed by ``input_uri`` (listing and stats rows of one input
   meet in one partition): the latest earlier row of each input, its version compared with the
   listing's, and a route for the next stage; undecodable unchanged inputs and vanished ones are
   counted here.
4. :func:`settle_names`, on partitions hashed by :func:`name_key` (an input, the earlier claims on the
   names it could take and the outputs present under those names meet in one partition): skip what is
   done, name the rest, count.

Every partitioning gives the same plan: what one input's decision depends on is in its partition.

A run over an archive whose earlier stats were all written for this input prefix (:func:`write_stats_part`:
each part sorted by :func:`plan_key`, the key range of each row group in its metadata) needs no
shuffle: each listing task reads the row groups of its shards' key ranges, lists the output folders
that mirror its folders, and plans its shards whole (:func:`plan_shards`); one more task counts the
inputs of folders that are gone (:func:`vanished_elsewhere`). Stage 3 and 4 run there unchanged.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .rows import OK, STATS_SCHEMA
from .stages.encode import EXTENSIONS, FORMAT_OF_EXTENSION
from .storage import (
    IMAGE_EXTENSIONS,
    StorageOptions,
    StoredObject,
    content_version,
    describe,
    describe_many,
    filesystem,
    join_uri,
    read_bytes,
    split_protocol,
    to_uri,
)

# Rows written before versions were recorded vouch only for inputs last modified this long before them.
LEGACY_MARGIN = 3600.0

# Shards of a listing: what to list under ``shard``.
TREE, FLAT, FILE = "tree", "flat", "file"  # everything below a folder; the files directly in it; one file
SHARD_SCHEMA = pa.schema([("shard", pa.string()), ("mode", pa.string())])
LISTED_SCHEMA = pa.schema(
    [("uri", pa.string()), ("size", pa.int64()), ("version", pa.string()), ("modified", pa.float64())]
)

# Rows of stage 3's input: what the listing (or the manifest) says of an input, or an earlier stats row.
LISTED, MISSING, EARLIER = 0, 1, 2  # kind: listed; a manifest entry that is not there; an earlier row
INPUT_SCHEMA = pa.schema(
    [
        ("input_uri", pa.string()),
        ("kind", pa.int8()),
        ("order", pa.int64()),  # a manifest entry's line (listed inputs: 0, named in URI order)
        ("size", pa.int64()),  # listed: the size now; earlier: input_bytes
        ("version", pa.string()),  # listed: the version now; earlier: input_version
        ("modified", pa.float64()),
        ("e_output_uri", pa.string()),
        ("e_ok", pa.bool_()),
        ("e_undecodable", pa.bool_()),
        ("e_finished", pa.float64()),  # epoch seconds
    ]
)

# Rows of stage 4's input.
RECORD, CLAIM, PRESENT, TALLY = 0, 1, 2, 3  # an input to decide; an earlier row's name; an output; counts
COUNTS = ("listed", "skipped", "still_bad", "changed", "vanished", "reformatted", "todo")
_COUNT_FIELDS = [(f"n_{c}", pa.int64()) for c in COUNTS]
ROUTED_SCHEMA = pa.schema(
    [
        ("name_key", pa.string()),
        ("kind", pa.int8()),
        ("input_uri", pa.string()),
        ("order", pa.int64()),
        ("size", pa.int64()),
        ("version", pa.string()),
        ("output_uri", pa.string()),  # record: the name it keeps (null: to be named); claim, present: the name
        ("same", pa.bool_()),  # record: the version restored before is the one listed now
        ("rel", pa.string()),
        ("format", pa.string()),
        ("reference_uri", pa.string()),
        *_COUNT_FIELDS,
    ]
)
# The plan: one row per input to restore (the pipeline's columns), and rows of counts (input_uri null).
PLANNED_SCHEMA = pa.schema(
    [
        ("input_uri", pa.string()),
        ("size", pa.int64()),
        ("version", pa.string()),  # "": the read stage records the content's hash instead
        ("output_uri", pa.string()),
        ("reference_uri", pa.string()),  # "" not None: all-None columns lose their type
        *_COUNT_FIELDS,
    ]
)
TODO_COLUMNS = ["input_uri", "size", "version", "output_uri", "reference_uri"]


def safe_relative(rel: str) -> str:
    """A relative key that stays under its prefix: no ``..``, ``.``, empty or absolute segments."""
    parts = []
    for seg in rel.replace("\\", "/").split("/"):
        if seg in ("", "."):
            continue
        parts.append("%2E%2E" if seg == ".." else seg)
    return "/".join(parts) or "_"


def relative_key(input_uri: str, prefix: str) -> str:
    """``input_uri``'s path relative to ``prefix`` (a folder, or the file itself)."""
    _, path = split_protocol(input_uri)
    _, root = split_protocol(prefix)
    root = root.rstrip("/")
    if path == root:
        return posixpath.basename(path)
    if not path.startswith(root + "/"):
        # Manifest entries outside the prefix keep their bucket/key path, made safe.
        return safe_relative(path)
    return safe_relative(path[len(root) + 1 :])


def output_format_for(rel: str, output_format: str) -> str:
    """The format an input's output is written in: ``output_format``, or with ``"same"`` the input's own
    by its extension (``"a/b.JPEG"`` -> ``"jpeg"``), ``"png"`` for formats that are not written."""
    if output_format != "same":
        return output_format
    return FORMAT_OF_EXTENSION.get(posixpath.splitext(rel)[1].lower(), "png")


def output_names(rel: str, fmt: str) -> list[str]:
    """The names an input may take, in order: ``a.jpg`` -> ``a.png``, ``a.jpg.png``, ``a-<hash>.png``."""
    stem, ext = posixpath.splitext(rel)
    new = EXTENSIONS[fmt]
    return [stem + new, f"{stem}{ext}{new}", f"{stem}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}{new}"]


def name_key(uri: str) -> str:
    """What every name an input may take shares with the input's first name: its folder and its file
    name up to the first ``.`` or ``-`` (``out/images/a.png``, ``a.jpg.png``, ``a-1f2e3d4c.png``: ``out/images/a``).

    Each of :func:`output_names` keeps the stem and appends a ``.`` or ``-`` suffix, so two inputs that
    could want one name have one key, and a claim on a name is seen by every input that could want it.
    """
    folder, _, base = uri.rpartition("/")
    cut = min((i for i in (base.find("."), base.find("-")) if i >= 0), default=len(base))
    return f"{folder}/{base[:cut]}"


def format_of(output_uri: str) -> str:
    return FORMAT_OF_EXTENSION.get(posixpath.splitext(output_uri)[1].lower(), "png")


def under(uri: str, prefix: str) -> bool:
    (p1, path), (p2, root) = split_protocol(uri), split_protocol(prefix)
    root = root.rstrip("/")
    return p1 == p2 and (path == root or path.startswith(root + "/"))


@dataclass(frozen=True, slots=True)
class Earlier:
    """The latest stats row of one model for one input: what an earlier run concluded."""

    ok: bool
    output_uri: str | None
    undecodable: bool  # it failed to decode (the bytes are bad, not the store or the worker)
    version: str | None  # None: a row written before versions were recorded
    size: int | None
    finished_at: float | None  # epoch seconds


def same_version(earlier: Earlier, now: StoredObject, *, content: str | None = None) -> bool:
    """Whether ``now`` is the version of the input that ``earlier`` was about.

    ``content``: the :func:`~pipeline.storage.content_version` of the input's bytes now, for stores
    that describe no version (then ``now.version`` is empty).
    """
    if earlier.version is None:
        # A row from before versions were recorded. Trusting it as runs did then (same model, output
        # present: skip) is safe only where the input provably has not changed since that row was
        # written: the same size, and last modified well before the row (LEGACY_MARGIN covers the time
        # between reading the bytes and writing the row, and clocks that disagree). Elsewhere (a store
        # without modification times, a recent write) the input is restored once more, and its new row
        # records the version.
        return (
            earlier.size == now.size
            and now.modified is not None
            and earlier.finished_at is not None
            and now.modified < earlier.finished_at - LEGACY_MARGIN
        )
    if now.version:
        return earlier.version == now.version
    return content is not None and earlier.version == content


# Stage 1: listing.


def list_top(roots: pa.Table, *, storage: StorageOptions) -> pa.Table:
    """The shards of each of ``roots["shard"]``: one per folder directly under it (listed recursively),
    one for the files directly in it, or the root itself where it names a file. One delimited listing
    of the first level: the files of a flat prefix are listed here only by name and again by their shard."""
    shards, modes = [], []
    for root_uri in roots.column("shard").to_pylist():
        fs, root = filesystem(root_uri, storage)
        protocol, _ = split_protocol(root_uri)
        if not fs.exists(root):
            continue
        if fs.isfile(root):
            shards.append(root_uri)
            modes.append(FILE)
            continue
        has_files = False
        for entry in fs.ls(root, detail=True):
            if entry.get("type") == "directory":
                shards.append(to_uri(protocol, entry["name"].rstrip("/")))
                modes.append(TREE)
            else:
                has_files = True
        if has_files:
            shards.append(to_uri(protocol, root.rstrip("/")))
            modes.append(FLAT)
    return pa.table({"shard": shards, "mode": modes}, schema=SHARD_SCHEMA)


def _list_one(shard: str, mode: str, storage: StorageOptions, images_only: bool, names_only: bool = False) -> list:
    fs, root = filesystem(shard, storage)
    protocol, _ = split_protocol(shard)
    if mode == FILE:  # an input that names one file is taken whatever its extension
        return [StoredObject(shard, 0, "", None) if names_only else describe(protocol, root, fs.info(root))]
    if mode == FLAT:
        entries = {e["name"]: e for e in fs.ls(root, detail=True) if e.get("type") != "directory"}
    elif names_only:  # no detail: local files are not stat'ed one by one
        entries = dict.fromkeys(fs.find(root, withdirs=False))
    else:
        entries = fs.find(root, detail=True, withdirs=False)
    paths = sorted(p for p in entries if not images_only or os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS)
    if names_only:
        return [StoredObject(to_uri(protocol, p), 0, "", None) for p in paths]
    return [describe(protocol, p, entries[p]) for p in paths]


def list_shards(
    shards: pa.Table,
    *,
    storage: StorageOptions,
    images_only: bool,
    threads: int = 8,
    missing_ok: bool = False,
    names_only: bool = False,
) -> pa.Table:
    """Every object of each shard (:func:`list_top`), with its version: :data:`LISTED_SCHEMA`.

    ``images_only``: only files with an image extension (case-insensitive). Shards are listed
    ``threads`` at a time: a listing waits on the store, not on the CPU. ``missing_ok``: a shard that is
    not there lists nothing (else :class:`FileNotFoundError`). ``names_only``: URIs alone (size 0, no
    version), for outputs, whose presence is all that counts.
    """
    pairs = list(zip(shards.column("shard").to_pylist(), shards.column("mode").to_pylist()))
    if not pairs:
        return LISTED_SCHEMA.empty_table()

    def one(shard: str, mode: str) -> list[StoredObject]:
        try:
            return _list_one(shard, mode, storage, images_only, names_only)
        except FileNotFoundError:
            if missing_ok:
                return []
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(pairs)))) as pool:
        listed = [o for objs in pool.map(lambda p: one(*p), pairs) for o in objs]
    return pa.table(
        {
            "uri": [o.uri for o in listed],
            "size": [int(o.size) for o in listed],
            "version": [o.version for o in listed],
            "modified": [o.modified for o in listed],
        },
        schema=LISTED_SCHEMA,
    )


def listed_inputs(listed: pa.Table) -> pa.Table:
    """Listing rows (:data:`LISTED_SCHEMA`) as stage 3's input rows."""
    n = listed.num_rows
    return _conform(
        {
            "input_uri": listed.column("uri"),
            "kind": pa.array([LISTED] * n, pa.int8()),
            "order": pa.array([0] * n, pa.int64()),
            "size": listed.column("size"),
            "version": listed.column("version"),
            "modified": listed.column("modified"),
        },
        n,
        INPUT_SCHEMA,
    )


def manifest_lines(manifests: pa.Table, *, storage: StorageOptions) -> pa.Table:
    """Input URIs of each manifest file (one per line; blank lines and ``#`` comments ignored) with their
    line numbers: ``uri``, ``order``."""
    uris, order = [], []
    for uri in manifests.column("shard").to_pylist():
        for i, line in enumerate(read_bytes(uri, storage).decode("utf-8").splitlines()):
            if line.strip() and not line.lstrip().startswith("#"):
                uris.append(line.strip())
                order.append(i)
    return pa.table({"uri": pa.array(uris, pa.string()), "order": pa.array(order, pa.int64())})


def describe_entries(entries: pa.Table, *, storage: StorageOptions) -> pa.Table:
    """Manifest entries (``uri``, ``order``) as stage 3's input rows: a manifest has no listing to carry
    sizes and versions, so one metadata request each (16 at a time); an entry that is not there is
    ``MISSING``."""
    uris = entries.column("uri").to_pylist()
    described = describe_many(uris, storage)
    n = len(uris)
    return _conform(
        {
            "input_uri": pa.array(uris, pa.string()),
            "kind": pa.array([LISTED if d else MISSING for d in described], pa.int8()),
            "order": entries.column("order"),
            "size": pa.array([d.size if d else 0 for d in described], pa.int64()),
            "version": pa.array([d.version if d else "" for d in described], pa.string()),
            "modified": pa.array([d.modified if d else None for d in described], pa.float64()),
        },
        n,
        INPUT_SCHEMA,
    )


# Stage 2: earlier stats.


def read_stats(files: pa.Table, *, model: str, storage: StorageOptions) -> pa.Table:
    """The rows of ``model`` in each stats file of ``files["shard"]``, as stage 3's input rows."""
    import pyarrow.dataset as pads

    paths = files.column("shard").to_pylist()
    if not paths:
        return INPUT_SCHEMA.empty_table()
    fs, _ = filesystem(paths[0], storage)
    # The schema is given, not taken from the file: parts written before a column existed (input_version)
    # read as nulls in it.
    table = pads.dataset(
        [split_protocol(p)[1] for p in paths], schema=STATS_SCHEMA, filesystem=fs, format="parquet"
    ).to_table(columns=EARLIER_COLUMNS, filter=pads.field("model") == model)
    return _earlier_rows(table)


EARLIER_COLUMNS = ["input_uri", "output_uri", "status", "error", "input_bytes", "input_version", "finished_at"]
EARLIER_SCHEMA = pa.schema([STATS_SCHEMA.field(n) for n in [*EARLIER_COLUMNS, "model"]])


def _earlier_rows(table: pa.Table) -> pa.Table:
    """Stats rows (:data:`EARLIER_COLUMNS`) as stage 3's input rows."""
    ok = [s == OK for s in table.column("status").to_pylist()]
    errors = table.column("error").to_pylist()
    finished = table.column("finished_at").cast(pa.int64()).to_pylist()  # microseconds
    n = table.num_rows
    return _conform(
        {
            "input_uri": table.column("input_uri"),
            "kind": pa.array([EARLIER] * n, pa.int8()),
            "size": table.column("input_bytes"),
            "version": table.column("input_version"),
            "e_output_uri": table.column("output_uri"),
            "e_ok": pa.array(ok, pa.bool_()),
            "e_undecodable": pa.array([not k and (e or "").startswith("decode:") for k, e in zip(ok, errors)]),
            "e_finished": pa.array([None if f is None else f / 1e6 for f in finished], pa.float64()),
        },
        n,
        INPUT_SCHEMA,
    )


# Stage 3: one input's listing against its earlier rows.


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
    """Stage 3, on rows (:data:`INPUT_SCHEMA`) hashed by ``input_uri``: every listing row and earlier row
    of an input are in ``part``. Returns stage 4's rows (:data:`ROUTED_SCHEMA`): a record per input to
    decide, keyed by the name it keeps or else by its first name; a claim per earlier ``ok`` row on its
    output; one row of counts. ``present``: the outputs there now, where this partition holds every one
    that its inputs could have (:func:`plan_shards`): inputs done are then skipped here, as stage 4
    would skip them."""
    now, earlier = _now_and_earlier(part)
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
    run), with the counts of what changed, what was reformatted, what vanished or is still bad."""
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
    """The listing of ``<output>/images`` (:data:`LISTED_SCHEMA`) as stage 4's rows."""
    uris = listed.column("uri").to_pylist()
    n = len(uris)
    return _conform(
        {
            "name_key": pa.array([name_key(u) for u in uris], pa.string()),
            "kind": pa.array([PRESENT] * n, pa.int8()),
            "output_uri": listed.column("uri"),
        },
        n,
        ROUTED_SCHEMA,
    )


# Stage 4: names.


def settle_names(part: pa.Table, *, output_uri: str) -> pa.Table:
    """Stage 4, on rows (:data:`ROUTED_SCHEMA`) hashed by ``name_key``: skip the inputs whose output is
    there, name the others, and count. Returns :data:`PLANNED_SCHEMA` rows.

    When two inputs would get one name (``a.jpg`` and ``a.png``), the first to claim it keeps it (earlier
    runs claim first, then inputs in URI order, or a manifest's order) and the others get
    ``<name>.<ext>.<new ext>``, so nothing is overwritten and names stay stable from run to run.
    """
    claimed: dict[str, str] = {}  # output name -> input that owns it
    present: set[str] = set()
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
    o_uri, o_size, o_version, o_out, o_ref = (out[name] for name in TODO_COLUMNS)
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
    for c in COUNTS:
        out[f"n_{c}"].extend([0] * len(o_uri))
    for name in TODO_COLUMNS:
        out[name].append(None)
    for c in COUNTS:
        out[f"n_{c}"].append(counts[c])
    return pa.table(out, schema=PLANNED_SCHEMA)


def plan_shards(
    shards: pa.Table,
    *,
    storage: StorageOptions,
    settle,
    input_uri: str,
    output_uri: str,
    model: str,
    index: pa.Table | None = None,
) -> pa.Table:
    """Stages 1 to 4 in one task, without a shuffle: list ``shards`` and plan them (:data:`PLANNED_SCHEMA`).

    Every input that could want an input's name is in its folder, which one shard holds whole. With no
    earlier stats (``index`` None: a first run) no name is claimed and no output can be skipped. With an
    ``index`` (:func:`stats_index`: the earlier parts were all written for this input prefix), the
    earlier rows of the shards' inputs are in the row groups whose key ranges meet the shards' (read
    here, those rows alone kept), and their outputs in the output folders that mirror the shards (listed
    here). ``settle``: :func:`settle_inputs` with the run's arguments.
    """
    inputs = listed_inputs(list_shards(shards, storage=storage, images_only=True))
    if index is None:
        return settle_names(settle(inputs), output_uri=output_uri)
    ranges = _ranges(shards)
    earlier = _read_ranges(index, ranges, model=model, storage=storage, keep=lambda k: _within(ranges, k))
    mirrors = _mirrors(shards, input_uri=input_uri, output_uri=output_uri)
    present = list_shards(mirrors, storage=storage, images_only=False, missing_ok=True, names_only=True)
    routed = settle(pa.concat_tables([inputs, earlier]), present=set(present.column("uri").to_pylist()))
    return settle_names(routed, output_uri=output_uri)


def vanished_elsewhere(shards: pa.Table, *, index: pa.Table, model: str, storage: StorageOptions) -> pa.Table:
    """The inputs with earlier rows of ``model`` in no shard of ``shards`` (every shard of the prefix:
    their folders are gone), counted as vanished: :data:`PLANNED_SCHEMA`'s counts row. Only row groups
    whose key range is not inside one shard's are read."""
    ranges = _ranges(shards)
    lows, highs = index.column("lo").to_pylist(), index.column("hi").to_pylist()
    inside = [(j := _range_of(ranges, lo)) is not None and hi < ranges[j][1] for lo, hi in zip(lows, highs)]
    rest = index.filter(pc.invert(pa.array(inside, pa.bool_())))
    gone = _read_ranges(rest, [("", MAX_KEY)], model=model, storage=storage, keep=lambda k: not _within(ranges, k))
    counts = {f"n_{c}": [0] for c in COUNTS}
    counts["n_vanished"] = [len(set(gone.column("input_uri").to_pylist()))]
    return pa.table({**{name: [None] for name in TODO_COLUMNS}, **counts}, schema=PLANNED_SCHEMA)


# Stats parts laid out for planning.

PLAN_METADATA = b"dgunet.plan"  # a stats part's Parquet key: the input prefix and its row groups' key ranges
MAX_KEY = "\U0010ffff"  # after every key
STATS_ROW_GROUP = 1024  # rows per row group of a stats part: what a task reads beyond its own key range


def plan_key(uri: str) -> str:
    """The order of stats rows in a part: by folder, then name, so that every shard (:func:`list_top`)
    is one key range (:func:`shard_range`): a folder's tree, or the files directly in a folder."""
    folder, _, base = uri.rpartition("/")
    return f"{folder}/\x00{base}"


def shard_range(shard: str, mode: str) -> tuple[str, str]:
    """The :func:`plan_key` range ``[lo, hi)`` of the inputs of ``shard``."""
    protocol, path = split_protocol(shard)
    root = to_uri(protocol, path.rstrip("/"))
    if mode == TREE:
        return root + "/", root + "0"  # "0" follows "/"
    if mode == FLAT:
        return root + "/\x00", root + "/\x01"
    key = plan_key(root)
    return key, key + "\x00"


def prefix_id(input_uri: str) -> str:
    """``input_uri`` as stats parts record it (the same prefix however it was spelled)."""
    protocol, path = split_protocol(input_uri)
    return to_uri(protocol, path.rstrip("/"))


def write_stats_part(table: pa.Table, sink, *, input_uri: str | None) -> None:
    """Write stats rows to ``sink`` (a path or a file object) as a run writes a part: sorted by
    :func:`plan_key` in row groups of :data:`STATS_ROW_GROUP`, with ``input_uri`` (the run's input prefix;
    None for a manifest run, whose parts plan through the shuffles) and each row group's key range in the
    schema's metadata."""
    import pyarrow.parquet as pq

    if input_uri is not None and table.num_rows:
        keys = [plan_key(u or "") for u in table.column("input_uri").to_pylist()]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        keys = [keys[i] for i in order]
        step = STATS_ROW_GROUP
        ranges = [[keys[i], keys[min(i + step, len(keys)) - 1]] for i in range(0, len(keys), step)]
        record = json.dumps({"input": prefix_id(input_uri), "ranges": ranges})
        table = table.take(pa.array(order, pa.int64()))
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PLAN_METADATA: record})
    pq.write_table(table, sink, compression="zstd", row_group_size=STATS_ROW_GROUP)


def stats_index(paths: list[str], *, input_uri: str, storage: StorageOptions) -> pa.Table | None:
    """The key range of every row group of the stats parts ``paths`` (``path``, ``group``, ``lo``, ``hi``),
    or None where a part was not written for ``input_uri`` by :func:`write_stats_part` (a manifest run's, another
    prefix's, or one from before): then the earlier rows are not where the shards are, and planning goes
    through the shuffles."""
    import pyarrow.parquet as pq

    def ranges(path: str) -> list | None:
        fs, p = filesystem(path, storage)
        with fs.open(p, "rb") as f:
            meta = pq.read_schema(f).metadata or {}
        if PLAN_METADATA not in meta:
            return None
        record = json.loads(meta[PLAN_METADATA])
        return record["ranges"] if record.get("input") == prefix_id(input_uri) else None

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(paths)))) as pool:
        found = list(pool.map(ranges, paths))
    if any(r is None for r in found):
        return None
    rows = [(path, g, lo, hi) for path, rs in zip(paths, found) for g, (lo, hi) in enumerate(rs)]
    return pa.table(
        {name: [r[i] for r in rows] for i, name in enumerate(("path", "group", "lo", "hi"))},
        schema=pa.schema([("path", pa.string()), ("group", pa.int64()), ("lo", pa.string()), ("hi", pa.string())]),
    )


def _ranges(shards: pa.Table) -> list[tuple[str, str]]:
    pairs = zip(shards.column("shard").to_pylist(), shards.column("mode").to_pylist())
    return sorted(shard_range(shard, mode) for shard, mode in pairs)


def _range_of(ranges: list[tuple[str, str]], key: str) -> int | None:
    """The index of the range of the sorted, disjoint ``ranges`` that holds ``key``, or None."""
    j = bisect.bisect_right(ranges, (key, MAX_KEY)) - 1
    return j if j >= 0 and ranges[j][0] <= key < ranges[j][1] else None


def _within(ranges: list[tuple[str, str]], key: str) -> bool:
    return _range_of(ranges, key) is not None


def _read_ranges(index: pa.Table, ranges, *, model: str, storage: StorageOptions, keep) -> pa.Table:
    """Stage 3's rows of ``model`` from the row groups of ``index`` that meet ``ranges``, those whose
    input's key passes ``keep`` alone."""
    import pyarrow.parquet as pq

    starts = [a for a, _ in ranges]
    groups: dict[str, list[int]] = {}
    for path, g, lo, hi in zip(*(index.column(c).to_pylist() for c in ("path", "group", "lo", "hi"))):
        # The group's keys, [lo, hi], meet a range where the last range starting at or before hi ends
        # after lo (the ranges are sorted and disjoint: it ends last of those).
        j = bisect.bisect_right(starts, hi) - 1
        if j >= 0 and ranges[j][1] > lo:
            groups.setdefault(path, []).append(g)
    if not groups:
        return INPUT_SCHEMA.empty_table()

    def read(path: str) -> pa.Table:
        fs, p = filesystem(path, storage)
        with fs.open(p, "rb") as f:
            t = pq.ParquetFile(f).read_row_groups(groups[path], columns=[*EARLIER_COLUMNS, "model"])
        # A part written before a column existed has none: nulls (as read_stats reads them).
        t = _conform({n: t.column(n) for n in t.column_names}, t.num_rows, EARLIER_SCHEMA)
        t = t.filter(pc.equal(t.column("model"), model))
        return t.filter(pa.array([keep(plan_key(u)) for u in t.column("input_uri").to_pylist()], pa.bool_()))

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(groups)))) as pool:
        return _earlier_rows(pa.concat_tables(pool.map(read, groups)))


def _mirrors(shards: pa.Table, *, input_uri: str, output_uri: str) -> pa.Table:
    """The output folders that mirror ``shards``: a folder's tree under ``<output>/images``, or the files
    directly in ``<output>/images`` for the files directly in the prefix (or the prefix that is one file)."""
    images = join_uri(output_uri, "images")
    out: dict[str, str] = {}
    for shard, mode in zip(shards.column("shard").to_pylist(), shards.column("mode").to_pylist()):
        if mode == TREE:
            out[join_uri(images, relative_key(shard, input_uri))] = TREE
        else:
            out[images] = FLAT
    return pa.table({"shard": list(out), "mode": list(out.values())}, schema=SHARD_SCHEMA)


def _conform(columns: dict, n: int, schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from ``columns``, the others null."""
    return pa.table(
        {f.name: columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema},
        schema=schema,
    )
