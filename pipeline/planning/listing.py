"""Finding the inputs: a prefix listed in shards, or a manifest's entries described one by one.

A prefix's first level is cut into shards (:func:`list_top`): each folder directly under it is a shard
listed recursively (``TREE``), the files directly in it one more (``FLAT``), and a prefix that names a file
is its own shard (``FILE``). Each shard is one :func:`~pipeline.stats.plan_key` range
(:func:`shard_range`), which is how a plan finds the earlier stats rows of the folders it lists.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from ..printable import printable
from ..stats import plan_key
from ..storage import (
    IMAGE_EXTENSIONS,
    StorageOptions,
    StoredObject,
    describe,
    describe_many,
    filesystem,
    join_uri,
    read_bytes,
    split_protocol,
    to_uri,
)
from .columns import FILE, FLAT, INPUT_SCHEMA, LISTED, LISTED_SCHEMA, MISSING, SHARD_SCHEMA, TREE, conform
from .names import relative_key

log = logging.getLogger(__name__)


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
        if names_only:
            return [StoredObject(shard, 0, "", None)]
        if protocol == "file" and not os.path.isfile(root):  # named, so a link is followed; a FIFO is not read
            log.warning("Not listed: %s is not a regular file.", printable(root))
            return []
        return [describe(protocol, root, fs.info(root))]
    if mode == FLAT:
        entries = {e["name"]: e for e in fs.ls(root, detail=True) if e.get("type") != "directory"}
    elif names_only:  # no detail: local files are not stat'ed one by one
        entries = dict.fromkeys(fs.find(root, withdirs=False))
    else:
        entries = fs.find(root, detail=True, withdirs=False)
    if protocol == "file" and not names_only:
        entries = local_files(entries, root=root if mode == FLAT else os.path.dirname(root.rstrip("/")))
    paths = sorted(p for p in entries if not images_only or os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS)
    if names_only:
        return [StoredObject(to_uri(protocol, p), 0, "", None) for p in paths]
    return [describe(protocol, p, entries[p]) for p in paths]


def local_files(entries: dict[str, dict], *, root: str) -> dict[str, dict]:
    """The ``entries`` of a local listing (path -> fsspec detail) that are read: regular files, and links
    whose real path is a regular file under the real path of ``root`` (the input prefix). A FIFO, device
    or socket, a link to a folder, and a link that leads out of the input are left out, with a warning: an
    upload could otherwise hang a read, read without end, or have a file from elsewhere restored and shown.
    fsspec's listing does not descend into linked folders."""
    real_root = os.path.realpath(root).rstrip("/") + "/"
    kept = {}
    for path, info in entries.items():
        if info.get("type") == "file" and not info.get("islink"):
            kept[path] = info
            continue
        real = os.path.realpath(path)
        if info.get("islink") and real.startswith(real_root) and os.path.isfile(real):
            kept[path] = info
        else:
            out = info.get("islink") and not real.startswith(real_root)
            why = "a link that leads out of the input" if out else "not a regular file"
            log.warning("Not listed: %s is %s.", printable(path), why)
    return kept


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
    """Listing rows (:data:`LISTED_SCHEMA`) as input rows (:data:`INPUT_SCHEMA`)."""
    n = listed.num_rows
    return conform(
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
    """Manifest entries (``uri``, ``order``) as input rows (:data:`INPUT_SCHEMA`): a manifest has no
    listing to carry sizes and versions, so one metadata request each (16 at a time); an entry that is
    not there is ``MISSING``."""
    uris = entries.column("uri").to_pylist()
    described = describe_many(uris, storage)
    n = len(uris)
    return conform(
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


def shard_range(shard: str, mode: str) -> tuple[str, str]:
    """The :func:`~pipeline.stats.plan_key` range ``[lo, hi)`` of the inputs of ``shard``."""
    protocol, path = split_protocol(shard)
    root = to_uri(protocol, path.rstrip("/"))
    if mode == TREE:
        return root + "/", root + "0"  # "0" follows "/"
    if mode == FLAT:
        return root + "/\x00", root + "/\x01"
    key = plan_key(root)
    return key, key + "\x00"


def shard_ranges(shards: pa.Table) -> list[tuple[str, str]]:
    """The sorted, disjoint :func:`shard_range` of each of ``shards``."""
    pairs = zip(shards.column("shard").to_pylist(), shards.column("mode").to_pylist())
    return sorted(shard_range(shard, mode) for shard, mode in pairs)


def mirrors(shards: pa.Table, *, input_uri: str, output_uri: str) -> pa.Table:
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
