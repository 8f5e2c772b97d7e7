"""Reading objects: one row per file, concurrent reads within a task, failures kept as rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..rows import OK, Col, fail
from ..storage import ReadRefusedError, StorageOptions, content_version, filesystem, read_bounded
from .stop import stopped

DEFAULT_MAX_BYTES = 512 * 2**20  # as ``input.max_bytes``'s default


def read_batch(
    batch: dict[str, np.ndarray],
    *,
    storage: StorageOptions,
    threads: int,
    stop=None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, np.ndarray]:
    """Ray Data stage: add ``data`` (the object's bytes), ``status`` and ``error`` to each row.

    A row whose ``version`` is empty (its store describes none) gets its content's sha256 as version,
    which the stats record, so that a later run can tell whether these bytes changed.

    Object-store latency dominates small reads, so a task reads its rows on ``threads`` threads.
    Transient errors are retried by the filesystem (botocore's adaptive retries for S3); an object that
    still cannot be read fails its row only.

    ``max_bytes``: a row whose listed size is larger fails unread, and no read takes more than this + 1
    bytes (:func:`~pipeline.storage.read_bounded`: a file that grew or lied fails too, and so does what
    is not a regular file, such as a FIFO).

    ``stop``: the run's :class:`~pipeline.stages.stop.StopFlag`; once it is raised, rows are dropped
    unread (the run is stopping, and the next run plans them again).
    """
    uris = list(batch[Col.INPUT_URI])
    if uris and stopped(stop):
        batch, uris = {k: v[:0] for k, v in batch.items()}, []
    if not uris:
        return {
            **batch,
            Col.DATA: np.array([], dtype=object),
            Col.STATUS: np.array([], dtype=object),
            Col.ERROR: np.array([], dtype=object),
        }
    fs, _ = filesystem(uris[0], storage)  # one listing holds one protocol

    sizes = batch[Col.SIZE] if Col.SIZE in batch else [0] * len(uris)

    def read(uri: str, size) -> tuple[bytes, str, str]:
        if size and size > max_bytes:
            return b"", *fail(f"read: Expected at most input.max_bytes = {max_bytes} bytes, but got {size} instead.")
        try:
            return read_bounded(uri, fs, max_bytes=max_bytes), OK, ""
        except ReadRefusedError as exc:
            return b"", *fail(f"read: {exc}")
        except Exception as exc:  # not found, permission, network: the row records why
            return b"", *fail(f"read: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        results = list(pool.map(read, uris, sizes))
    out = dict(batch)
    out[Col.DATA] = np.array([r[0] for r in results], dtype=object)
    out[Col.STATUS] = np.array([r[1] for r in results], dtype=object)
    out[Col.ERROR] = np.array([r[2] for r in results], dtype=object)
    if Col.VERSION in batch:
        out[Col.VERSION] = np.array(
            [v or (content_version(r[0]) if r[1] == OK else "") for v, r in zip(batch[Col.VERSION], results)],
            dtype=object,
        )
    return out
