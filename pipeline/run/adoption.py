"""Adopting outputs that were written but never recorded, instead of restoring their inputs again.

An image can be written without its stats row: a write batch cut off by a stopping run after its PUT, a
driver killed before its stats part was written. The next plan finds no row for the input, and a file
under the name its output would take (``output_present``, :func:`pipeline.planning.settle.settle_names`).
Before the pipeline starts, the driver reads each such file's provenance from its metadata alone (no
pixels decoded, :func:`pipeline.stages.metadata.read_provenance`): where it names this input, at the
version listed now, and this model, the file is adopted: its stats row is written with ``action``
``adopted``, and the input is not restored. Where it does not match, or cannot be read, the input is
restored as before (and the file replaced).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pyarrow as pa

from ..printable import printable
from ..rows import ADOPTED, OK, STATS_SCHEMA, Col
from ..storage import StorageOptions, content_version, read_bytes

log = logging.getLogger(__name__)


def adoption_candidates(plan) -> list[dict]:
    """The plan's rows marked ``output_present`` (:class:`~pipeline.planning.plan.Plan`): few, usually none."""
    if plan.blocks is None:
        return [r for r in plan.rows or [] if r.get(Col.OUTPUT_PRESENT)]
    import pyarrow.compute as pc

    def present(batch: pa.Table) -> pa.Table:
        return batch.filter(pc.fill_null(batch.column(Col.OUTPUT_PRESENT), False))

    return plan.dataset().map_batches(present, batch_format="pyarrow", batch_size=None).take_all()


def adopt(candidates: list[dict], *, model: str, run_id: str, storage: StorageOptions, threads: int = 8) -> pa.Table:
    """The stats rows (:data:`STATS_SCHEMA`) of the ``candidates`` whose output's provenance names their
    input, at the version planned, and ``model``; the others are left to be restored."""
    if not candidates:
        return STATS_SCHEMA.empty_table()
    now = datetime.now(timezone.utc).replace(tzinfo=None)

    def check(row: dict) -> dict | None:
        try:
            return _adopted_row(row, model=model, run_id=run_id, storage=storage, now=now)
        except Exception as exc:  # unreadable: restored as usual
            log.warning("Could not read the output %s to adopt it: %s", printable(row[Col.OUTPUT_URI]), printable(exc))
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(candidates)))) as pool:
        rows = [r for r in pool.map(check, candidates) if r is not None]
    return pa.Table.from_pylist([{k: r.get(k) for k in STATS_SCHEMA.names} for r in rows], schema=STATS_SCHEMA)


def _adopted_row(row: dict, *, model: str, run_id: str, storage: StorageOptions, now: datetime) -> dict | None:
    from ..stages.encode import format_of
    from ..stages.metadata import read_provenance

    data = read_bytes(row[Col.OUTPUT_URI], storage)
    record = read_provenance(data)
    # A store without versions: the version is the content's hash, as the read stage records it.
    version = row[Col.VERSION] or content_version(read_bytes(row[Col.INPUT_URI], storage))
    wanted = {"input_uri": row[Col.INPUT_URI], "input_version": version, "model": model}
    if any(record.get(k) != v for k, v in wanted.items()):
        return None
    width, height, channels, bits = _shape(data)
    return {
        "run_id": run_id,
        "input_uri": row[Col.INPUT_URI],
        "output_uri": row[Col.OUTPUT_URI],
        "status": OK,
        "model": model,
        "width": width,
        "height": height,
        "channels": channels,
        "bit_depth": bits,
        "input_bytes": row[Col.SIZE],
        "input_version": version,
        "output_bytes": len(data),
        "output_format": format_of(row[Col.OUTPUT_URI]),
        "action": ADOPTED,
        "metadata": "provenance",
        "finished_at": now,
    }


def _shape(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, channels and bits per sample from the file's header (no pixels decoded)."""
    from ..stages.formats import open_image

    with open_image(data) as img:
        bands = len(img.getbands())
        bits = 16 if img.mode.startswith("I;16") or img.mode in ("I", "RGB;16", "RGBA;16") else 8
        if img.format == "PNG" and img.info.get("bitdepth"):  # not set by Pillow; kept for clarity
            bits = int(img.info["bitdepth"])
        return img.width, img.height, bands, bits
