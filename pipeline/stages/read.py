"""Reading objects: one row per file, concurrent reads within a task, failures kept as rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..rows import OK, Col, fail
from ..storage import StorageOptions, content_version, filesystem, split_protocol
from .stop import stopped


def read_batch(
    batch: dict[str, np.ndarray], *, storage: StorageOptions, threads: int, stop=None
) -> dict[str, np.ndarray]:
    """Ray Data stage: add ``data`` (the object's bytes), ``status`` and ``error`` to each row.

    A row whose ``version`` is empty (its store describes none) gets its content's sha256 as version,
    which the stats record, so that a later run can tell whether these bytes changed.

    Object-store latency dominates small reads, so a task reads its rows on ``threads`` threads.
    Transient errors are retried by the filesystem (botocore's adaptive retries for S3); an object that
    still cannot be read fails its row only.

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

    def read(uri: str) -> tuple[bytes, str, str]:
        try:
            return fs.cat_file(split_protocol(uri)[1]), OK, ""
        except Exception as exc:  # not found, permission, network: the row records why
            return b"", *fail(f"read: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        results = list(pool.map(read, uris))
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
