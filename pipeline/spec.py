"""Job specs: YAML validated into frozen schemas before any work starts.

The restore job's schema (:class:`RestoreSpec`) is here, with what every spec shares: the strict base
model and the network's architecture section. The loader that every spec goes through (dotted-key
overrides, credentials refused, local paths made absolute since Ray workers run elsewhere, every problem
reported with the dotted key it concerns) is :mod:`pipeline.spec_loader`; :func:`parse_spec` and
:func:`load_spec` hand it this schema, and its names are importable from here too. The training job's
schema (:mod:`pipeline.training.spec`) is built from the same parts.

An unknown key or a bad value is an error that names it. Credentials never belong in a spec: they come
from the environment, a profile or an instance role, and a spec that holds one is refused; so is a URI
(weights, input, output, endpoint) on a cloud metadata service, which would hand the job the machine's own
credentials.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from dgunet.options import Arch, Precision
from dgunet.tasks import ESTIMATES
from dgunet.tasks import NAMES as TASK_NAMES

from .spec_loader import SpecError as SpecError
from .spec_loader import add_spec_flags as add_spec_flags
from .spec_loader import flag_overrides as flag_overrides
from .spec_loader import read_yaml, validate_spec
from .spec_loader import spec_field as spec_field
from .stages.encode import EncodeOptions
from .stages.formats import OUTPUT_FORMATS, OUTPUT_NAMES
from .storage import StorageOptions, split_protocol

# The names a spec may give, from dgunet's torch-free corner: tasks from the task table (dgunet/tasks.py),
# architectures and precisions from dgunet/options.py.
Task = Literal[TASK_NAMES]  # type: ignore[valid-type]
OutputName = Literal[(*OUTPUT_NAMES, "same")]  # type: ignore[valid-type]
AUTO = "auto"  # a restore job's task that routes each image to the task it needs (pipeline.routing)
RestoreTask = Literal[(*TASK_NAMES, AUTO)]  # type: ignore[valid-type]


class StrictModel(BaseModel):
    """A spec section: unknown keys are errors, and a validated spec cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchSpec(StrictModel):
    """The network: architecture and widths (``None``: the task preset's)."""

    arch: Arch = Field("dgunet", description="dgunet (middle stages share weights) or dgunet_plus")
    n_feat: int | None = Field(None, ge=2, description="channels at full resolution; None: the task preset")
    scale_unetfeats: int | None = Field(
        None, ge=2, description="channels added at each coarser U-Net level; None: the task preset"
    )
    scale_orsnetfeats: int | None = Field(
        None, ge=1, description="extra channels of the last stage's fusion conv (dgunet only); None: the task preset"
    )
    depth: int = Field(5, ge=1, description="middle stages; the network has depth + 2")


class ModelSpec(ArchSpec):
    """The restore job's network: the weights it loads, and optionally the architecture they must have.

    Weights that record their network (the bundled ones; checkpoints that training writes) decide the
    arch and widths: a value given here that differs is an error naming the key. For a checkpoint that
    records nothing, ``None`` is ``dgunet``, the task preset's widths and ``depth`` 5.
    """

    weights: str | None = Field(
        None,
        description="checkpoint URI (official files load as they are; give their widths); None: the bundled "
        "default of the task",
    )
    arch: Arch | None = Field(None, description="dgunet or dgunet_plus; None: the weights' (else dgunet)")
    n_feat: int | None = Field(
        None, ge=2, description="channels at full resolution; None: the weights' (else the task preset)"
    )
    depth: int | None = Field(None, ge=1, description="middle stages; None: the weights' (else 5)")


class InputSpec(StrictModel):
    """What to restore."""

    uri: str = Field(
        description="prefix (or single file) to restore: s3://bucket/prefix, gs://..., local path; listed "
        "recursively for png, jpg/jpeg, tif/tiff, bmp, gif and webp files, any case"
    )
    manifest: str | None = Field(None, description="a text file of input URIs, one per line, instead of listing")
    reference: str | None = Field(None, description="prefix of clean references with the same relative names")
    max_pixels: int = Field(120_000_000, ge=1, description="larger images fail with a reason (bomb guard)")
    max_bytes: int = Field(
        512 * 2**20, ge=1, description="larger files fail with a reason, unread; no read takes more than this + 1 bytes"
    )


class OutputSpec(StrictModel):
    """Where and how the restored images, stats, summaries and reports are written."""

    uri: str = Field(
        description="images/, stats/, runs/, reports/ are written under this prefix (not inside input.uri)"
    )
    format: OutputName = Field(
        "png",
        description=f"{', '.join(OUTPUT_NAMES)}, or same: the input's format (by extension; png where it has none "
        "of these). 16-bit pixels go only to png and tiff, alpha never to jpeg: such an image fails with the reason",
    )
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level; 1 is fast, 9 small")
    quality: int | None = Field(
        None, ge=1, le=100, description="jpeg (null: 92) and webp (null: lossless) quality; not for png or tiff"
    )
    jpeg_subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] = Field("4:4:4", description="jpeg chroma subsampling")
    metadata: bool = Field(
        True, description="carry EXIF, XMP, IPTC and text over (ICC and the provenance are always written)"
    )
    report: bool = Field(True, description="write reports/<run_id>.html: before/after pairs, histograms, failures")
    report_samples: int = Field(8, ge=0, le=64, description="random before/after pairs in the report")
    stats_part_rows: int = Field(5000, ge=1, description="stats rows per Parquet part (one is also cut every 30 s)")
    lock_stale_minutes: float = Field(
        15, gt=0, description="a run lock not renewed for this long is taken over (live runs renew it every minute)"
    )
    shutdown_grace_seconds: float = Field(
        30,
        ge=1,
        description="on SIGTERM/SIGINT, seconds to finish what is restored, write the stats and summary, and exit",
    )

    @model_validator(mode="after")
    def _format_settings(self) -> OutputSpec:
        row = OUTPUT_FORMATS.get(self.format)  # None: "same", any of them
        if self.quality is not None and row is not None and row.lossy == "never":
            lossy = ", ".join(f.name for f in OUTPUT_FORMATS.values() if f.lossy != "never")
            raise ValueError(
                f"Expected output.quality only with output.format {lossy} or same, but got output.format "
                f"{self.format} instead (it is lossless)."
            )
        if self.jpeg_subsampling != "4:4:4" and row is not None and not row.subsampling:
            raise ValueError(
                f"Expected output.jpeg_subsampling only with output.format jpeg or same, but got output.format "
                f"{self.format} instead."
            )
        return self

    def encode_options(self) -> EncodeOptions:
        """How the write stage encodes each format."""
        return EncodeOptions(
            compress_level=self.png_compress_level, quality=self.quality, subsampling=self.jpeg_subsampling
        )


class StatsSpec(StrictModel):
    """How the stats parts of earlier runs are kept (:mod:`pipeline.run.compaction`)."""

    compact_after: int = Field(
        32,
        ge=0,
        description="at the end of a run, merge the earlier runs' stats parts once there are more than this "
        "many (0: never; python jobs/compact_stats.py does it by hand)",
    )
    history_days: float = Field(
        0,
        ge=0,
        description="keep the rows that compaction supersedes this many days in stats-history/ (0: not kept)",
    )


class _AutoSpec(StrictModel):
    """``task: auto``: each image goes to the restoration that it needs, or passes through untouched. The
    router (:mod:`pipeline.routing`) reads what degrades it in the decode stage; each task's images go to
    that task's weights (``<task>_weights``, one field per task of the table). A task with no weights here
    and none bundled is not an error: its images pass, with the reason in their stats row."""

    router: str | None = Field(None, description="a router JSON (python jobs/train_router.py); null: the bundled one")

    def weights(self, task: str) -> str | None:
        return getattr(self, f"{task}_weights")


AutoSpec = create_model(
    "AutoSpec",
    __base__=_AutoSpec,
    __module__=__name__,
    **{
        f"{name}_weights": (
            str | None,
            Field(None, description=f"weights for the images that go to {name}; null: the bundled model, if one ships"),
        )
        for name in TASK_NAMES
    },
)


class _GateSpec(StrictModel):
    """Images that need no restoration pass through: their output holds the input's pixels unchanged and
    their stats say ``action: passed``. The level of each estimate (``<estimate>_below``, one field per
    estimate a gate can read: dgunet.tasks.ESTIMATES) left out (null) is the weights' default: bundled
    weights declare theirs in their metadata, a checkpoint gets its task's (the task table's gate)."""

    enabled: bool = Field(True, description="false: restore every image")
    restore_lossy: bool | None = Field(
        None, description="always restore JPEG and lossy WebP files (their artefacts hide from the noise estimate)"
    )

    def settings(self, default: Mapping[str, Any]) -> dict[str, Any]:
        """The model stage's ``gate_on`` (the estimate's column), ``pass_below`` and ``restore_lossy``;
        ``pass_below`` None restores everything.

        Args:
            default: the weights' gate: ``estimate`` (one of dgunet.tasks.ESTIMATES), ``below`` (its level,
                or None) and ``restore_lossy``; what this spec sets wins.
        """
        estimate = default["estimate"]
        given = getattr(self, f"{estimate}_below")
        return {
            "gate_on": f"{estimate}_before",
            "pass_below": (given if given is not None else default["below"]) if self.enabled else None,
            "restore_lossy": default["restore_lossy"] if self.restore_lossy is None else self.restore_lossy,
        }


GateSpec = create_model(
    "GateSpec",
    __base__=_GateSpec,
    __module__=__name__,
    **{
        f"{name}_below": (
            float | None,
            Field(None, ge=0, description=f"{what}; null: the weights' default"),
        )
        for name, what in ESTIMATES.items()
    },
)


class ResourcesSpec(StrictModel):
    """The model actors: what each holds, and how many run."""

    gpus_per_actor: float = Field(0, ge=0, description="0: CPU actors; fractions share a GPU")
    cpus_per_actor: float = Field(1, gt=0, description="also the actor's torch thread count")
    memory_per_actor_gb: float = Field(2.0, ge=0.25, description="memory Ray reserves for each model actor")
    min_actors: int = Field(1, ge=1, description="model actors kept running")
    max_actors: int = Field(1, ge=1, description="model actors the pool may grow to")
    batch_size: int = Field(4, ge=1, description="images per model call; equal sizes run as one batch")
    read_threads: int = Field(8, ge=1, description="concurrent object reads within one read task")
    max_task_retries: int = Field(
        2, ge=0, description="retries of a model batch whose actor died; then its images are tried alone, then fail"
    )

    @model_validator(mode="after")
    def _pool(self) -> ResourcesSpec:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) must not exceed max_actors ({self.max_actors})")
        return self


class InferenceSpec(StrictModel):
    """How the model runs. A field left out (null) takes the weights' recommendation where they make
    one (the bundled denoiser recommends tiles of its training scale), else the library default."""

    tile: int | None = Field(None, ge=16, description="tile side, a multiple of 8 (default 512)")
    overlap: int | None = Field(None, ge=0, description="pixels shared by neighbouring tiles (default 64)")
    max_pixels: int | None = Field(None, ge=256, description="whole-image inference up to this, tiles above")
    precision: Precision | None = Field(None, description="autocast dtype (default float32)")
    ensemble: bool | None = Field(None, description="average the 8 flips/rotations (x8 compute)")
    tile_batch: int | None = Field(
        None, ge=1, description="tiles per forward pass (default: about 2 megapixels of tiles on a GPU, 1 on CPUs)"
    )
    channels_last: bool | None = Field(
        None, description="channels_last memory format (default true: faster convolutions on CPUs and GPUs)"
    )

    def overrides(self) -> dict[str, Any]:
        """The fields this spec sets, as :class:`~dgunet.inference.InferenceOptions` keywords."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    @model_validator(mode="after")
    def _valid(self) -> InferenceSpec:
        if self.overrides():  # the library's own checks (tile a multiple of 8, overlap under half a tile)
            from dgunet.options import InferenceOptions

            InferenceOptions(**self.overrides())  # raises ValueError naming the field
        return self


class StorageSpec(StrictModel):
    """How to reach S3-compatible stores; credentials never come from here."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (default: AWS_ENDPOINT_URL)")
    region: str | None = Field(None, description="S3 region (default: the environment's, e.g. AWS_REGION)")
    anon: bool = Field(False, description="anonymous access, for public buckets (no credentials sent)")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection before retrying")
    read_timeout: float = Field(
        60.0, gt=0, description="seconds to wait for an answer's next bytes before retrying the request"
    )

    def options(self) -> StorageOptions:
        return StorageOptions(
            endpoint_url=self.endpoint_url,
            region=self.region,
            anon=self.anon,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )


def _real(uri: str) -> tuple[str, str]:
    """``uri``'s protocol and path, a local path with its links and ``..`` resolved (compared, not used)."""
    protocol, path = split_protocol(uri)
    return protocol, os.path.realpath(path) if protocol == "file" else posixpath.normpath(path)


class RestoreSpec(StrictModel):
    """The restore job's spec (jobs/restore_bucket.py)."""

    task: RestoreTask = Field(
        "denoise", description="what to restore; picks the bundled weights. auto: each image as it needs (auto.*)"
    )
    model: ModelSpec = ModelSpec()
    auto: AutoSpec = AutoSpec()
    input: InputSpec
    output: OutputSpec
    resources: ResourcesSpec = ResourcesSpec()
    inference: InferenceSpec = InferenceSpec()
    gate: GateSpec = GateSpec()
    stats: StatsSpec = StatsSpec()
    storage: StorageSpec = StorageSpec()
    allow_failed_fraction: float = Field(0.0, ge=0, le=1, description="exit 0 up to this fraction of failures")

    @model_validator(mode="after")
    def _paths(self) -> RestoreSpec:
        (in_proto, in_path), (out_proto, out_path) = _real(self.input.uri), _real(self.output.uri)
        if in_proto == out_proto:
            a, b = in_path.rstrip("/") + "/", out_path.rstrip("/") + "/"
            if b.startswith(a) or a == b:
                raise ValueError(
                    f"output.uri ({self.output.uri}) must not be inside input.uri ({self.input.uri}): "
                    "outputs would be listed as inputs by the next run"
                )
            if a.startswith(b):
                raise ValueError(
                    f"input.uri ({self.input.uri}) must not be inside output.uri ({self.output.uri}): "
                    "outputs would be written over their own inputs"
                )
        return self

    @model_validator(mode="after")
    def _auto(self) -> RestoreSpec:
        if self.task == AUTO:
            given = [f"model.{k}" for k in ("weights", *ArchSpec.model_fields) if getattr(self.model, k) is not None]
            if given:
                per_task = ", ".join(f"auto.{name}_weights" for name in TASK_NAMES)
                raise ValueError(
                    f"{given[0]}: task auto takes weights per task ({per_task}), not one model section; leave model out"
                )
            gate = [f"gate.{k}" for k, v in self.gate.model_dump().items() if v != GateSpec.model_fields[k].default]
            if gate:
                raise ValueError(f"{gate[0]}: task auto has no gate levels: its router decides what passes")
        else:
            given = [f"auto.{k}" for k, v in self.auto.model_dump().items() if v is not None]
            if given:
                raise ValueError(f"{given[0]}: applies to task auto only, but task is {self.task}")
        return self


_PATH_KEYS = (
    *(("input", "uri"), ("input", "manifest"), ("input", "reference"), ("output", "uri"), ("model", "weights")),
    *(("auto", f"{task}_weights") for task in TASK_NAMES),
    ("auto", "router"),
)


def parse_spec(data: dict[str, Any], *, source: str = "spec") -> RestoreSpec:
    """Validate a restore spec dict (see :func:`validate_spec`)."""
    return validate_spec(RestoreSpec, data, source=source, path_keys=_PATH_KEYS)


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> RestoreSpec:
    """Read a YAML restore spec, apply ``overrides`` (dotted keys), validate."""
    return parse_spec(read_yaml(path, overrides), source=str(path))
