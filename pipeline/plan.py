"""Planning a run in the driver: list the inputs, name their outputs, skip what is already done.

Output names mirror the input's path relative to the input prefix with the extension replaced by
``.png``. Key segments that could escape the output prefix (``..``, empty, absolute) are rewritten. When
two inputs would get one name (``a.jpg`` and ``a.png``), the first to claim it keeps it (earlier runs
claim first, then listing order) and the others get ``<name>.<ext>.png``, so nothing is overwritten and
names stay stable from run to run.

A run is incremental: an input whose latest stats row for the same model is ``ok`` and whose output
exists is skipped, and so is one that failed to decode before with bytes of the same size; a re-run over
an unchanged archive does no work, new uploads are picked up, and other failures are retried.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from .storage import StorageOptions, filesystem, join_uri, list_images, read_bytes, split_protocol, to_uri


@dataclass
class Plan:
    todo: list[dict]  # rows for the pipeline: input_uri, size, output_uri, reference_uri
    skipped: int  # restored before by the same model, output present
    still_bad: int  # failed to decode before, bytes unchanged (same size)
    listed: int
    seconds: float = 0.0


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


def _png_names(rel: str) -> list[str]:
    stem, ext = posixpath.splitext(rel)
    plain = stem + ".png"
    return [plain, f"{stem}{ext}.png", f"{stem}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}.png"]


def read_manifest(uri: str, storage: StorageOptions) -> list[tuple[str, int]]:
    """Input URIs from a text file, one per line (blank lines and ``#`` comments ignored)."""
    lines = read_bytes(uri, storage).decode("utf-8").splitlines()
    return [(s.strip(), 0) for s in lines if s.strip() and not s.lstrip().startswith("#")]


@dataclass(frozen=True)
class Previous:
    """What earlier runs of one model concluded about each input (its latest row)."""

    ok: dict[str, str]  # input_uri -> output_uri
    undecodable: dict[str, int]  # input_uri -> size of the bytes that failed to decode


def previous_results(output_uri: str, model: str, storage: StorageOptions) -> Previous:
    """The latest stats row of ``model`` per input, from every run under ``<output>/stats``."""
    import pyarrow.dataset as pads

    fs, stats = filesystem(join_uri(output_uri, "stats"), storage)
    files = [p for p in fs.find(stats) if p.endswith(".parquet")] if fs.exists(stats) else []
    if not files:
        return Previous({}, {})
    table = pads.dataset(files, filesystem=fs, format="parquet").to_table(
        columns=["input_uri", "output_uri", "status", "error", "input_bytes", "finished_at"],
        filter=pads.field("model") == model,
    )
    table = table.sort_by("finished_at")
    latest = {}
    for row in table.to_pylist():
        latest[row["input_uri"]] = row
    ok = {u: r["output_uri"] for u, r in latest.items() if r["status"] == "ok"}
    bad = {
        u: r["input_bytes"]
        for u, r in latest.items()
        if r["status"] != "ok" and (r["error"] or "").startswith("decode:")
    }
    return Previous(ok, bad)


def existing_outputs(output_uri: str, storage: StorageOptions) -> set[str]:
    """Every object under ``<output>/images``, as URIs (one listing, not one request per file)."""
    images = join_uri(output_uri, "images")
    fs, root = filesystem(images, storage)
    protocol, _ = split_protocol(images)
    if not fs.exists(root):
        return set()
    return {to_uri(protocol, p) for p in fs.find(root)}


def make_plan(
    *,
    input_uri: str,
    output_uri: str,
    model: str,
    storage: StorageOptions,
    manifest: str | None = None,
    reference: str | None = None,
) -> Plan:
    """List the inputs (or read the manifest), skip done ones, and assign output URIs."""
    import time

    t0 = time.perf_counter()
    listed = read_manifest(manifest, storage) if manifest else list(list_images(input_uri, storage))
    prev = previous_results(output_uri, model, storage)
    done = prev.ok
    present = existing_outputs(output_uri, storage)
    claimed = {out: inp for inp, out in done.items()}  # output name -> input that owns it
    todo, skipped, still_bad = [], 0, 0
    for uri, size in listed:
        if uri in done and done[uri] in present:
            skipped += 1
            continue
        if prev.undecodable.get(uri, -1) == size:
            still_bad += 1  # the same bytes failed to decode before: no use trying again
            continue
        rel = relative_key(uri, input_uri)
        if uri in done:  # re-doing a missing output: keep its name
            out = done[uri]
        else:
            out = next(
                o
                for o in (join_uri(output_uri, "images", name) for name in _png_names(rel))
                if claimed.get(o, uri) == uri
            )
        claimed[out] = uri
        todo.append(
            {
                "input_uri": uri,
                "size": int(size),
                "output_uri": out,
                "reference_uri": join_uri(reference, rel)
                if reference
                else "",  # "" not None: all-None columns lose their type
            }
        )
    return Plan(todo, skipped, still_bad, len(listed), time.perf_counter() - t0)
