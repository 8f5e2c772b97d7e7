"""The last stage: encode each restored image with its metadata, write it atomically, measure it; rows
become stats."""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .. import quality
from ..faults import STALL_SECONDS, fires
from ..rows import OK, PASSED, QUALITY_COLUMNS, STATS_SCHEMA, STOPPED, Col, fail, pixels_of
from ..storage import StorageOptions, read_bytes, write_bytes_atomic
from .decode import DecodeError, decode_image
from .encode import EncodeOptions, Tags, check_fits, encode_image, format_of
from .estimates import COLUMNS as ESTIMATE_COLUMNS
from .metadata import Metadata, provenance, tags_for
from .stop import begin_writes, finish_writes


def write_batch(
    batch: dict[str, np.ndarray],
    *,
    run_id: str,
    model: str,
    storage: StorageOptions,
    max_pixels: int,
    options: EncodeOptions | None = None,
    keep_metadata: bool = True,
    failpoints: dict[str, str] | None = None,
    stop=None,
) -> dict[str, np.ndarray]:
    """Ray Data stage: write ``restored`` to ``output_uri`` in the format its extension names (see
    :func:`pipeline.stages.encode.format_of`; the planner chose it), with the input's ``metadata`` and
    a provenance record (software, ``model``, ``run_id``); return stats columns only. ``keep_metadata``
    False: only the provenance and the colour profile are written (no EXIF, XMP, IPTC or text).

    Pixels that the format cannot hold (16-bit into JPEG or WebP, alpha into JPEG) fail their row with
    the reason. Metadata that cannot be kept is listed in ``metadata_error`` and never fails the image.
    The write goes to a temporary name and is renamed (local) or is a single PUT (object stores), so a
    reader never sees a partial file. Quality measures compare the restored image with the decoded input,
    and with ``reference_uri`` when the row has one. ``failpoints``: see :mod:`pipeline.faults` (tests only).
    ``stop``: the run's :class:`~pipeline.stages.stop.StopFlag`, which holds the row of each image written
    until the driver has it, in case a stopping driver cannot wait for the pipeline to deliver it; once
    the driver has closed it, rows are marked stopped instead of written.
    """
    n = len(batch[Col.INPUT_URI])
    rows: dict[str, list] = {name: [None] * n for name in STATS_SCHEMA.names}
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC: the stats schema says tz=UTC
    settings = _Settings(
        run_id, model, storage, max_pixels, options or EncodeOptions(), keep_metadata, failpoints or {}
    )
    to_write = [i for i in range(n) if batch[Col.STATUS][i] == OK]
    # One call for the batch: once the driver has closed the flag, no image of it is written (the next
    # run plans them again), and the rows of those written are handed to the flag in one more call.
    allowed = stop is None or not to_write or begin_writes(stop, [batch[Col.INPUT_URI][i] for i in to_write])
    held: dict[str, dict | None] = {}
    for i in range(n):
        if batch[Col.STATUS][i] == OK and not allowed:
            row = _stats_row(batch, i, settings, now, status=STOPPED)
        else:
            row = _stats_row(batch, i, settings, now)
        if stop is not None and batch[Col.STATUS][i] == OK and allowed:
            held[row["input_uri"]] = row if row["status"] == OK else None
        for k, v in row.items():
            rows[k][i] = v
    if held:
        finish_writes(stop, held)
    return {k: np.array(v, dtype=object) for k, v in rows.items()}


@dataclass(frozen=True)
class _Settings:
    run_id: str
    model: str
    storage: StorageOptions
    max_pixels: int
    options: EncodeOptions
    keep_metadata: bool
    failpoints: dict[str, str]


def _stats_row(batch: dict[str, np.ndarray], i: int, s: _Settings, now: datetime, status: str | None = None) -> dict:
    """Row ``i`` written (when it is ``ok``) and measured: its stats row. ``status``: in place of the row's."""
    status, error = status or batch[Col.STATUS][i], batch[Col.ERROR][i]
    h, w, c = (int(v) for v in batch[Col.SHAPE][i])
    dtype = batch[Col.DTYPE][i]
    row = {
        "run_id": s.run_id,
        "input_uri": batch[Col.INPUT_URI][i],
        "output_uri": batch[Col.OUTPUT_URI][i],
        "model": s.model,
        "input_bytes": int(batch[Col.SIZE][i]),
        "input_version": batch[Col.VERSION][i] or None,
        "mode": batch[Col.MODE][i] or None,
        "decode_seconds": float(batch[Col.DECODE_SECONDS][i]),
        "seconds": float(batch[Col.SECONDS][i]),
        "action": batch[Col.ACTION][i] or None,
        "task": _text(batch, Col.TASK, i),
        "passed_because": _text(batch, Col.PASSED_BECAUSE, i),
        "degradation": _degradation(batch, i),
        "finished_at": now,
    }
    if dtype:
        row.update(width=w, height=h, channels=c, bit_depth=8 * np.dtype(dtype).itemsize)
    if status == OK:
        try:
            restored = pixels_of(batch[Col.RESTORED][i], (h, w, c), dtype)
        except Exception as exc:
            status, error = fail(f"write: {type(exc).__name__}: {exc}")
    if status == OK:
        # Measured before the write, so that the row is ready as soon as the image is written: a stopping
        # run takes the rows of the images written from the stop flag and waits for writes alone.
        degraded = pixels_of(batch[Col.PIXELS][i], (h, w, c), dtype)
        noise = float(batch[Col.NOISE_BEFORE][i])
        measures = _measure(
            restored,
            degraded,
            batch[Col.REFERENCE_URI][i],
            s.storage,
            s.max_pixels,
            noise_before=None if np.isnan(noise) else noise,
            passed=batch[Col.ACTION][i] == PASSED,
        )
        try:
            row.update(_write_output(batch, i, restored, s))
        except Exception as exc:
            status, error = fail(f"write: {type(exc).__name__}: {exc}")
        else:
            row.update({col: _number(batch, col, i) for col in ESTIMATE_COLUMNS if col != Col.NOISE_BEFORE})
            row.update(measures)
    row.update(status=status, error=error or None)
    if status != OK:
        row["output_uri"] = None
    return row


def _text(batch: dict[str, np.ndarray], col: str, i: int) -> str | None:
    return (str(batch[col][i]) or None) if col in batch else None


def _number(batch: dict[str, np.ndarray], col: str, i: int) -> float | None:
    value = float(batch[col][i]) if col in batch else np.nan
    return None if np.isnan(value) else value


def _degradation(batch: dict[str, np.ndarray], i: int) -> str | None:
    """``"<route> <probability>"`` of a routed row, e.g. ``"blur 0.93"``; None in single-task runs."""
    route = _text(batch, Col.ROUTE, i)
    if route is None:
        return None
    score = _number(batch, Col.ROUTE_SCORE, i)
    return route if score is None else f"{route} {score:.2f}"


def _write_output(batch: dict[str, np.ndarray], i: int, restored: np.ndarray, s: _Settings) -> dict:
    """Encode row ``i``'s restored pixels with its metadata and write them; the stats it adds."""
    t0 = time.perf_counter()
    uri = batch[Col.OUTPUT_URI][i]
    fmt = format_of(uri)
    check_fits(restored, fmt)
    meta = Metadata.from_json(batch[Col.METADATA][i] if Col.METADATA in batch else "")
    if not s.keep_metadata:  # the profile stays: it says what the pixels mean
        meta = Metadata(format=meta.format, icc_description=meta.icc_description, icc=meta.icc)
    record = provenance(
        software=software(),
        model=s.model,
        run_id=s.run_id,
        meta=meta,
        input_uri=batch[Col.INPUT_URI][i],
        input_version=batch[Col.VERSION][i] or "",
    )
    encoded, kept, problems = encode_with_metadata(restored, fmt, s.options, meta, record)
    if fires(s.failpoints, "write.stall", batch[Col.INPUT_URI][i]):
        print(f"fail point write.stall: {batch[Col.INPUT_URI][i]}", file=sys.stderr, flush=True)
        time.sleep(STALL_SECONDS)
    write_bytes_atomic(uri, encoded, s.storage)
    return {
        "output_bytes": len(encoded),
        "output_format": fmt,
        "encode_seconds": time.perf_counter() - t0,
        "metadata": ",".join(kept),
        "metadata_error": "; ".join(problems) or None,
    }


def encode_with_metadata(
    pixels: np.ndarray, fmt: str, options: EncodeOptions, meta: Metadata, record: dict[str, str]
) -> tuple[bytes, list[str], list[str]]:
    """``pixels`` encoded as ``fmt`` with ``meta`` and the provenance ``record``: the bytes, what was kept
    and what was not (see :func:`pipeline.stages.metadata.tags_for`). Metadata the encoder refuses (an EXIF block
    over JPEG's 64 KiB segment) is left out and reported: the image is written with its colour tag alone.

    Raises:
        ValueError: the pixels do not fit ``fmt`` (:func:`pipeline.stages.encode.check_fits`).
    """
    tags, kept, problems = tags_for(meta, fmt, channels=pixels.shape[2], record=record)
    try:
        return encode_image(pixels, fmt, options, tags), kept, problems
    except Exception as exc:
        bare = Tags(icc=tags.icc, srgb=tags.srgb)
        encoded = encode_image(pixels, fmt, options, bare)  # raises again if the pixels are at fault
        problem = f"metadata: not written, the {fmt} encoder refused it ({type(exc).__name__}: {exc})"
        return encoded, [k for k in kept if k in ("icc", "srgb")], [*problems, " ".join(problem.split())[:300]]


@functools.cache
def software() -> str:
    """``"dgunet-restore <version>"``, as the provenance record names what made a file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"dgunet-restore {version('dgunet-restore')}"
    except PackageNotFoundError:
        return "dgunet-restore"


def _measure(
    restored, degraded, reference_uri, storage, max_pixels, *, noise_before: float | None, passed: bool
) -> dict[str, float | None]:
    """Quality columns; a measure that cannot be taken stays empty rather than failing the image. The
    noise before comes from the decode stage; an image passed through is the same after as before."""
    try:
        values = quality.no_reference(restored, degraded, noise_before=noise_before, same=passed)
    except (ValueError, MemoryError):
        values = {}
    if reference_uri:
        try:
            ref = decode_image(read_bytes(reference_uri, storage), max_pixels=max_pixels).pixels
            values.update(quality.paired(restored, degraded, ref))
        except (OSError, DecodeError, ValueError):
            pass  # missing or mismatched reference: the paired columns stay empty
    return {k: v for k, v in values.items() if k in QUALITY_COLUMNS}
