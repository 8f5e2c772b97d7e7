"""The columns that flow between stages, and the stats row each input ends as."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

OK, FAILED = "ok", "failed"
RESTORED, PASSED = "restored", "passed"  # the action column: through the model, or passed through
ADOPTED = "adopted"  # the action of an output found written (its provenance names this input and model), not made again
STOPPED = "stopped"  # a row the model stage did not start because the run is stopping; it is never a stats row


class Col:
    """The columns of the batches that flow between the stages, each added by one stage.

    planned (:mod:`pipeline.planning`, one row per input to restore): ``INPUT_URI``, ``OUTPUT_URI``, ``SIZE``
    (bytes as listed), ``VERSION`` (the store's version identity, "" where it gives none),
    ``REFERENCE_URI`` (a clean reference or ""), ``OUTPUT_PRESENT`` (a file is there under the output's
    name that no stats row accounts for: the driver may adopt it, :mod:`pipeline.run.adoption`);
    read (:func:`pipeline.stages.read.read_batch`): ``DATA`` (the file's bytes), ``STATUS`` and ``ERROR`` (a row that
    failed carries its reason to the stats; every later stage passes it through), and ``VERSION`` filled
    with the content's sha256 where the store gave none;
    decode (:func:`pipeline.stages.decode.decode_batch`, drops ``DATA``): ``PIXELS`` (raw bytes), ``SHAPE`` (H, W, C),
    ``DTYPE``, ``MODE`` (the file's), ``LOSSY``, ``NOISE_BEFORE``, ``RAIN_BEFORE`` (NaN unless asked for),
    ``METADATA`` (JSON), ``DECODE_SECONDS``; routing (``task: auto``) also ``BLUR_BEFORE``, ``BLOCKINESS_BEFORE``,
    ``ROUTE`` (:data:`pipeline.routing.CLASSES`) and ``ROUTE_SCORE`` (its probability), "" and NaN otherwise;
    model (:class:`pipeline.stages.model.RestoreModel`): ``RESTORED`` (raw bytes, as ``PIXELS``), ``ACTION``
    (``RESTORED`` or ``PASSED``), ``TASK`` (the task that ran, "" where none did), ``PASSED_BECAUSE``,
    ``SECONDS``;
    write (:func:`pipeline.stages.write.write_batch`): the stats row, :data:`STATS_SCHEMA`, and nothing else.
    """

    INPUT_URI, OUTPUT_URI, SIZE, VERSION, REFERENCE_URI = "input_uri", "output_uri", "size", "version", "reference_uri"
    OUTPUT_PRESENT = "output_present"
    DATA, STATUS, ERROR = "data", "status", "error"
    PIXELS, SHAPE, DTYPE, MODE, LOSSY = "pixels", "shape", "dtype", "mode", "lossy"
    NOISE_BEFORE, RAIN_BEFORE, METADATA, DECODE_SECONDS = "noise_before", "rain_before", "metadata", "decode_seconds"
    BLUR_BEFORE, BLOCKINESS_BEFORE, ROUTE, ROUTE_SCORE = "blur_before", "blockiness_before", "route", "route_score"
    JPEG_STEP_BEFORE = "jpeg_step_before"
    RESTORED, ACTION, SECONDS = "restored", "action", "seconds"
    TASK, PASSED_BECAUSE = "task", "passed_because"


# One Parquet row per input and run.
STATS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("input_uri", pa.string()),
        ("output_uri", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("model", pa.string()),  # "<arch>/<task>@sha256:<weights digest>"
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("channels", pa.int64()),
        ("bit_depth", pa.int64()),
        ("mode", pa.string()),
        ("input_bytes", pa.int64()),
        # The input's version as planned (pipeline.storage.StoredObject.version, or its content's sha256
        # where the store gives none). Null in rows written before versions were recorded.
        ("input_version", pa.string()),
        ("output_bytes", pa.int64()),
        ("output_format", pa.string()),  # "png", "webp", "jpeg" or "tiff"
        # "restored"; "passed": below the gate's level, written unchanged; "adopted": the output was found
        # written by an earlier run that never recorded it (its provenance matches), and kept as it is
        ("action", pa.string()),
        # The task that ran ("denoise", "deblur", "derain"); null where the image passed or failed
        ("task", pa.string()),
        # task: auto: what the router found, with its probability, e.g. "blur 0.93"; null in single-task runs
        ("degradation", pa.string()),
        # Why an image passed: "clean" (the router), "no deblur model: ...", "noise 3.10 below the gate's 4.5"
        ("passed_because", pa.string()),
        ("seconds", pa.float64()),  # model time for this image
        ("decode_seconds", pa.float64()),
        ("encode_seconds", pa.float64()),
        # What the output carries of the input's metadata, e.g. "exif,xmp,srgb,provenance" (see
        # pipeline.stages.metadata.tags_for), and what was lost: unreadable or with no place in the format.
        ("metadata", pa.string()),
        ("metadata_error", pa.string()),
        ("noise_before", pa.float64()),  # estimated Gaussian noise sigma, 8-bit levels
        ("noise_after", pa.float64()),
        ("rain_before", pa.float64()),  # thin bright streaking, 8-bit levels (deraining and auto runs)
        ("blur_before", pa.float64()),  # scikit-image's blur_effect, 0 sharp to 1 flat (auto runs)
        ("blockiness_before", pa.float64()),  # JPEG grid strength, about 1 without JPEG (auto runs)
        ("jpeg_step_before", pa.float64()),  # JPEG's luma quantization step, 1: none found (dejpeg, auto runs)
        ("sharpness_before", pa.float64()),  # variance of the Laplacian, [0, 1] intensities
        ("sharpness_after", pa.float64()),
        ("psnr_before", pa.float64()),  # against input.reference, when the spec gives one
        ("psnr_after", pa.float64()),
        ("ssim_before", pa.float64()),
        ("ssim_after", pa.float64()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)
QUALITY_COLUMNS = [n for n in STATS_SCHEMA.names if n.split("_")[0] in ("noise", "rain", "sharpness", "psnr", "ssim")]


def fail(reason: str) -> tuple[str, str]:
    """The ``(status, error)`` pair of a failed row; reasons are one line. Rows that are fine carry
    ``("ok", "")``: empty strings rather than None, since a column of only None loses its type in Ray."""
    return FAILED, " ".join(str(reason).split())[:500]


def pixels_of(raw: bytes, shape, dtype: str) -> np.ndarray:
    """Rebuild an ``(H, W, C)`` array from the raw bytes of the ``pixels``/``restored`` columns."""
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(tuple(int(s) for s in shape))


def model_id(arch: str, task: str, sha256: str) -> str:
    return f"{arch}/{task}@sha256:{sha256}"
