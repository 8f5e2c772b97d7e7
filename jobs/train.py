"""Train DGUNet on Ray Train from a YAML spec; resumes from the spec's checkpoint folder.

python jobs/train.py --spec jobs/specs/train_denoise_small.yaml
python jobs/train.py --spec jobs/specs/train_denoise_small.yaml --local   # one process, no Ray
python jobs/train.py --spec jobs/specs/train_derain_cpu.yaml --local --cpu-hours 2   # to 2 CPU-hours in all
ray job submit --working-dir . -- python jobs/train.py --spec jobs/specs/train_denoise_small.yaml
"""

from __future__ import annotations

import argparse
import sys

from pipeline.spec_loader import SpecError, add_spec_flags, flag_overrides
from pipeline.training.loop import fit
from pipeline.training.spec import TrainSpec

# flag -> dotted spec key; each flag's type and help come from the training spec's schema
FLAGS = {
    "steps": "optim.steps",
    "checkpoint": "checkpoint.uri",
    "data": "data.train",
    "every": "checkpoint.every_steps",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True, help="training spec (YAML)")
    add_spec_flags(ap, FLAGS, TrainSpec)
    ap.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--local", action="store_true", help="train in this process, without Ray (one worker)")
    ap.add_argument("--time-limit", type=float, help="with --local: stop and save after this many seconds")
    ap.add_argument(
        "--cpu-hours",
        type=float,
        help="with --local: stop and save once training has spent this many CPU-hours, over every resumed run",
    )
    ap.add_argument("--save-every-cpu-min", type=float, help="with --local: validate and save this often as well")
    args = ap.parse_args(argv)

    try:
        spec = TrainSpec.from_yaml(args.spec, flag_overrides(args, FLAGS))
    except SpecError as err:
        print(err, file=sys.stderr)
        return 2
    if args.local:
        import torch

        torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
        metrics = fit(
            spec,
            time_limit_s=args.time_limit,
            cpu_limit_s=args.cpu_hours * 3600 if args.cpu_hours else None,
            save_every_cpu_s=args.save_every_cpu_min * 60 if args.save_every_cpu_min else None,
            loader_threads=spec.resources.loader_threads,
        )
        print(f"done: {metrics}; checkpoint at {spec.checkpoint.uri}/last.pth")
        return 0
    from pipeline.run.ray_env import init_ray
    from pipeline.run.ray_version import RayVersionError, check_ray_version
    from pipeline.training.loop import run_training

    try:
        check_ray_version()  # a Ray without token auth would start or join a cluster without it
    except RayVersionError as err:
        print(err, file=sys.stderr)
        return 2
    init_ray(args.address)
    result = run_training(spec)
    if result.error:
        print(f"training failed: {result.error}", file=sys.stderr)
        return 1
    print(f"done: {result.metrics}; checkpoint at {spec.checkpoint.uri}/last.pth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
