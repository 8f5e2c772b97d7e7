"""Planning a run in the driver: list the inputs, name their outputs, skip what is already done.

Output names mirror the input's path relative to the input prefix with the extension replaced by the
output format's (``.png``, ``.webp``, ``.jpg``, ``.tif``; with ``output.format: same``, the input's own
format by its extension, ``.png`` for the others). Key segments that could escape the output prefix
(``..``, empty, absolute) are rewritten. When two inputs would get one name (``a.jpg`` and ``a.png``),
the first to claim it keeps it (earlier runs claim first, then listing order) and the others get
``<name>.<ext>.png``, so nothing is overwritten and names stay stable from run to run.

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

import hashlib
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .encode import EXTENSIONS, FORMAT_OF_EXTENSION
from .rows import OK, STATS_SCHEMA
from .storage import (
    StorageOptions,
    StoredObject,
    content_version,
    describe_many,
    filesystem,
    join_uri,
    list_objects,
    read_bytes,
    split_protocol,
    to_uri,
)

# Rows written before versions were recorded vouch only for inputs last modified this long before them.
LEGACY_MARGIN = 3600.0


@dataclass
class Plan:
    todo: list[dict]  # rows for the pipeline: input_uri, size, version, output_uri, reference_uri
    skipped: int  # this version restored before by the same model, output present
    still_bad: int  # this version failed to decode before
    listed: int
    seconds: float = 0.0
    changed: int = 0  # in todo because the input changed since it was restored (or failed to decode)
    vanished: int = 0  # inputs with earlier rows that are gone now (their outputs stay)
    reformatted: int = 0  # in todo because their output is in another format than the one asked for now


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


def _output_names(rel: str, fmt: str) -> list[str]:
    stem, ext = posixpath.splitext(rel)
    new = EXTENSIONS[fmt]
    return [stem + new, f"{stem}{ext}{new}", f"{stem}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}{new}"]


def _format_of(output_uri: str) -> str:
    return FORMAT_OF_EXTENSION.get(posixpath.splitext(output_uri)[1].lower(), "png")


def read_manifest(uri: str, storage: StorageOptions) -> list[str]:
    """Input URIs from a text file, one per line (blank lines and ``#`` comments ignored)."""
    lines = read_bytes(uri, storage).decode("utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


@dataclass(frozen=True, slots=True)
class Earlier:
    """The latest stats row of one model for one input: what an earlier run concluded."""

    ok: bool
    output_uri: str | None
    undecodable: bool  # it failed to decode (the bytes are bad, not the store or the worker)
    version: str | None  # None: a row written before versions were recorded
    size: int | None
    finished_at: float | None  # epoch seconds


def previous_results(output_uri: str, model: str, storage: StorageOptions) -> dict[str, Earlier]:
    """The latest stats row of ``model`` per input, from every run under ``<output>/stats``."""
    import pyarrow.dataset as pads

    fs, stats = filesystem(join_uri(output_uri, "stats"), storage)
    files = [p for p in fs.find(stats) if p.endswith(".parquet")] if fs.exists(stats) else []
    if not files:
        return {}
    # The schema is given, not taken from the first file: parts written before a column existed
    # (input_version) read as nulls in it.
    table = pads.dataset(files, schema=STATS_SCHEMA, filesystem=fs, format="parquet").to_table(
        columns=["input_uri", "output_uri", "status", "error", "input_bytes", "input_version", "finished_at"],
        filter=pads.field("model") == model,
    )
    table = table.sort_by("finished_at")
    latest = {}
    for row in table.to_pylist():
        finished = row["finished_at"]
        latest[row["input_uri"]] = Earlier(
            ok=row["status"] == OK,
            output_uri=row["output_uri"],
            undecodable=row["status"] != OK and (row["error"] or "").startswith("decode:"),
            version=row["input_version"],
            size=row["input_bytes"],
            finished_at=finished.timestamp() if finished is not None else None,
        )
    return latest


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


def existing_outputs(output_uri: str, storage: StorageOptions) -> set[str]:
    """Every object under ``<output>/images``, as URIs (one listing, not one request per file)."""
    images = join_uri(output_uri, "images")
    fs, root = filesystem(images, storage)
    protocol, _ = split_protocol(images)
    if not fs.exists(root):
        return set()
    return {to_uri(protocol, p) for p in fs.find(root)}


def _inputs(input_uri: str, manifest: str | None, storage: StorageOptions) -> tuple[list[StoredObject], list[str]]:
    """The inputs with their versions, and the URIs of manifest entries that are not there."""
    if not manifest:
        return list(list_objects(input_uri, storage)), []
    uris = read_manifest(manifest, storage)
    # A manifest has no listing to carry sizes and versions: one metadata request per entry, in threads.
    described = describe_many(uris, storage)
    return [d for d in described if d is not None], [u for u, d in zip(uris, described) if d is None]


def _under(uri: str, prefix: str) -> bool:
    (p1, path), (p2, root) = split_protocol(uri), split_protocol(prefix)
    root = root.rstrip("/")
    return p1 == p2 and (path == root or path.startswith(root + "/"))


def _hash_contents(uris: list[str], storage: StorageOptions, *, threads: int = 8) -> dict[str, str]:
    """:func:`~pipeline.storage.content_version` of each of ``uris``, read ``threads`` at a time."""
    if not uris:
        return {}
    with ThreadPoolExecutor(max_workers=min(threads, len(uris))) as pool:
        return dict(zip(uris, pool.map(lambda u: content_version(read_bytes(u, storage)), uris)))


def make_plan(
    *,
    input_uri: str,
    output_uri: str,
    model: str,
    storage: StorageOptions,
    manifest: str | None = None,
    reference: str | None = None,
    output_format: str = "png",
) -> Plan:
    """List the inputs (or read the manifest), skip done ones, and assign output URIs in ``output_format``
    (``png``, ``webp``, ``jpeg``, ``tiff`` or ``same``; see :func:`output_format_for`)."""
    import time

    t0 = time.perf_counter()
    listed, missing = _inputs(input_uri, manifest, storage)
    earlier = previous_results(output_uri, model, storage)
    present = existing_outputs(output_uri, storage)
    claimed = {e.output_uri: uri for uri, e in earlier.items() if e.ok}  # output name -> input that owns it
    # Stores that describe no version: the inputs that an earlier row could vouch for are hashed now.
    content = _hash_contents(
        [
            o.uri
            for o in listed
            if not o.version and (e := earlier.get(o.uri)) and (e.version or "").startswith("sha256:")
        ],
        storage,
    )
    if manifest:
        # A missing manifest entry that was never tried is planned, and fails with the reason.
        vanished = sum(1 for uri in missing if uri in earlier)
        listed += [StoredObject(uri, 0, "", None) for uri in missing if uri not in earlier]
    else:
        names = {o.uri for o in listed}
        vanished = sum(1 for uri in earlier if uri not in names and _under(uri, input_uri))
    todo, skipped, still_bad, changed, reformatted = [], 0, 0, 0, 0
    for obj in listed:
        uri, e = obj.uri, earlier.get(obj.uri)
        rel = relative_key(uri, input_uri)
        fmt = output_format_for(rel, output_format)
        same = e is not None and same_version(e, obj, content=content.get(uri))
        same_format = e is not None and e.ok and _format_of(e.output_uri) == fmt
        if same and same_format and e.output_uri in present:
            skipped += 1
            continue
        if same and e.undecodable:
            still_bad += 1  # the same bytes failed to decode before: no use trying again
            continue
        changed += e is not None and (e.ok or e.undecodable) and not same
        reformatted += same and e.ok and not same_format
        if same_format:  # re-doing a changed input or a missing output: keep its name
            out = e.output_uri
        else:
            out = next(
                o
                for o in (join_uri(output_uri, "images", name) for name in _output_names(rel, fmt))
                if claimed.get(o, uri) == uri
            )
        claimed[out] = uri
        todo.append(
            {
                "input_uri": uri,
                "size": int(obj.size),
                "version": obj.version,  # "": the read stage records the content's hash instead
                "output_uri": out,
                "reference_uri": join_uri(reference, rel)
                if reference
                else "",  # "" not None: all-None columns lose their type
            }
        )
    return Plan(
        todo,
        skipped,
        still_bad,
        len(listed),
        time.perf_counter() - t0,
        changed=changed,
        vanished=vanished,
        reformatted=reformatted,
    )
