"""What restoring so many megapixels would take: seconds per megapixel measured for the bundled models, by
device kind, each with where it was measured.

A figure is the model's time alone on one actor, from a benchmark that this repository ran and quotes
(docs/performance.md, docs/device-kit.md); reading, decoding and writing run beside it on other CPUs, and
starting Ray and the actors is left out. The dry run (:mod:`pipeline.run.dry_run`) divides by the actors the
spec asks for and multiplies by a price per hour where one is given.

    >>> est = estimate(megapixels=120.0, task="denoise", gpus_per_actor=0, actors=4, price_per_hour=0.2)
    >>> round(est.seconds), round(est.cost, 2)
    (314, 0.07)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Figure:
    """Seconds of one model actor per megapixel, and where that was measured."""

    seconds_per_megapixel: float
    source: str


# The bundled denoiser (8/4/4, depth 1, 170k parameters, 128 px tiles) on the CPU; on a GPU, the earlier
# bundled denoiser (16/8/8, depth 5, 609k parameters: about 4 times the CPU-seconds per pixel), the only
# network the device kit has timed.
FIGURES = {
    "cpu": Figure(
        343.28 / 32.77,  # 10.5 s/MP
        "measured on this project's 2-core CPU: the bundled denoiser's model actor (1 CPU, float32) was busy "
        "343.3 s for 500 crops of 256x256 (32.8 MP) in bench/pipeline_overhead.py --images 500 "
        "(docs/performance.md, 'The pipeline against a plain loop')",
    ),
    "gpu": Figure(
        1 / 14.0,  # 0.071 s/MP
        "measured by the device kit on one NVIDIA H100 80GB: the earlier bundled denoiser (16/8/8, depth 5), "
        "256x256 crops in batches of 16, float32 (TF32), 14.0 MP/s, the forward pass alone (docs/device-kit.md; "
        "results/device_kit/2026-11-26-h100/)",
    ),
}

# Each bundled model's CPU-seconds per pixel against the denoiser's, as restore runs it (its own tiles or
# whole images), measured in one run of bench/speed.py on a 1024x1024 crop: denoise 9.50, derain 12.46,
# deblur 10.62, dejpeg 13.58 CPU-s/MP. Task auto takes the dearest, since each image's route is unknown
# until the run decodes it.
CPU_FACTORS = {"denoise": 1.0, "derain": 12.46 / 9.50, "deblur": 10.62 / 9.50, "dejpeg": 13.58 / 9.50}
CPU_FACTORS["auto"] = max(CPU_FACTORS.values())

TASK_NOTES = {"denoise": ""} | {
    task: f"the denoiser's CPU figure times {CPU_FACTORS[task]:.2f}, the {model} model's CPU-seconds per pixel "
    "against the denoiser's in bench/speed.py"
    for task, model in (("deblur", "deblurring"), ("derain", "deraining"), ("dejpeg", "JPEG"))
}
TASK_NOTES["auto"] = (
    "task auto: each image's route is unknown until the run decodes it; the dearest model's figure (the JPEG "
    "model's on the CPU) for every image, an upper bound"
)
GPU_NOTE = "the GPU figure is the earlier, larger denoiser's: an upper bound for today's bundled models"


@dataclass(frozen=True)
class Estimate:
    """The model's time for a dry run's megapixels, on ``actors`` actors, and its cost where priced."""

    device: str  # "cpu" or "gpu"
    seconds_per_megapixel: float
    source: str
    note: str
    actors: int
    seconds: float
    actor_hours: float
    price_per_hour: float | None
    cost: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(
    *, megapixels: float, task: str, gpus_per_actor: float, actors: int, price_per_hour: float | None = None
) -> Estimate:
    """The model's wall time for ``megapixels`` spread over ``actors`` actors, and (``price_per_hour``: of
    one actor's share of a machine) the cost of the actor-hours.

    Raises:
        ValueError: ``actors`` below 1, or a negative ``price_per_hour``.
    """
    if actors < 1:
        raise ValueError(f"Expected at least 1 actor, but got {actors} instead.")
    if price_per_hour is not None and price_per_hour < 0:
        raise ValueError(f"Expected --price-per-hour >= 0, but got {price_per_hour} instead.")
    device = "gpu" if gpus_per_actor > 0 else "cpu"
    figure = FIGURES[device]
    if device == "cpu":
        seconds_per_megapixel, note = (
            figure.seconds_per_megapixel * CPU_FACTORS.get(task, 1.0),
            TASK_NOTES.get(task, ""),
        )
    else:
        seconds_per_megapixel, note = figure.seconds_per_megapixel, GPU_NOTE
    actor_seconds = megapixels * seconds_per_megapixel
    hours = actor_seconds / 3600
    return Estimate(
        device=device,
        seconds_per_megapixel=seconds_per_megapixel,
        source=figure.source,
        note=note,
        actors=actors,
        seconds=actor_seconds / actors,
        actor_hours=hours,
        price_per_hour=price_per_hour,
        cost=None if price_per_hour is None else hours * price_per_hour,
    )
