"""Training DGUNet with Ray Train: data-parallel over N workers, CPU or GPU, resumable.

The loop keeps its own official-format checkpoint (``<checkpoint.uri>/last.pth``: ``epoch``,
``state_dict``, ``optimizer`` plus ``step``, ``config`` and the spec; ``epoch`` in the official sense, see
:func:`epochs_done`), so that ``dgunet.load_checkpoint``
and the restore pipeline take it as it is, and a restarted job resumes where it stopped. Every
``checkpoint.every_steps`` steps it validates, appends a line to ``history.jsonl`` and reports the same
metrics to Ray Train.

:func:`fit` is the loop itself and needs no Ray: the device kit (``bench/device_kit.py``) trains on a
lent GPU with it; :func:`run_training` runs it on every Ray Train worker.
The images and batches it trains on come from :mod:`pipeline.training.data`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .data import Batches, TrainingData, load_training_data
from .data import load_rgb as load_rgb  # where jobs/evaluate.py and bench/gate.py import it from
from .schedule import Budget, lr_at
from .spec import OptimSpec, TrainSpec


def crops_drawn(optim: OptimSpec, steps: int, *, workers: int = 1) -> int:
    """Training crops drawn in the first ``steps`` steps: each step's batch (progressive phases included)
    on each of ``workers`` data-parallel workers."""
    phases = [(0, optim.batch_size)] + [(start, batch) for start, _, batch in sorted(optim.progressive)]
    ends = [start for start, _ in phases[1:]] + [steps]
    per_phase = (batch * (min(end, steps) - min(start, steps)) for (start, batch), end in zip(phases, ends))
    return workers * sum(per_phase)


def epochs_done(optim: OptimSpec, steps: int, *, workers: int, images: int) -> int:
    """Completed epochs after ``steps`` steps, in the sense of the official ``epoch`` key: the official
    loader crops each training image once per epoch, so an epoch is as many crops as there are images.
    Crops are drawn at random here, so this counts epochs' worth of crops, not exact passes."""
    return crops_drawn(optim, steps, workers=workers) // max(1, images)


def psnr(x, y) -> float:
    """PSNR (dB) of a model's output ``x`` (clamped to [0, 1]) against ``y``, tensors ``(N, C, H, W)`` in
    [0, 1]: :func:`pipeline.quality.psnr`."""
    from ..quality import psnr as psnr_of

    return psnr_of(y.detach().float().cpu().numpy(), x.detach().clamp(0, 1).float().cpu().numpy(), data_range=1.0)


class _Run:
    """One training run's model, optimizer, loss and history: resumed, stepped, validated and saved."""

    def __init__(self, spec: TrainSpec, data: TrainingData, *, device, rank: int, world_size: int, log):
        import torch

        from dgunet import create_model

        from ..storage import join_uri

        self.spec, self.data, self.device, self.log = spec, data, device, log
        self.rank, self.world_size = rank, world_size
        self.time_fraction = 0.0  # the share of fit's time limit spent (see lr_at)
        self.cpu_s = 0.0  # this process's CPU seconds spent drawing batches and stepping, over all resumes
        self.memory_format = torch.channels_last if spec.optim.channels_last else torch.contiguous_format
        widths = spec.model.model_dump(exclude={"arch"})
        model = create_model(spec.task, arch=spec.model.arch, weights=False, **widths)  # untrained
        self.model, self.cfg = model.to(memory_format=self.memory_format), model.cfg
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=spec.optim.lr, betas=spec.optim.betas, weight_decay=spec.optim.weight_decay
        )
        self.last_uri = join_uri(spec.checkpoint.uri, "last.pth")
        self.history_uri = join_uri(spec.checkpoint.uri, "history.jsonl")
        self.history: list[dict[str, Any]] = []
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.optim.precision == "bfloat16")

    def resume(self) -> int:
        """Load ``last.pth`` (weights, Adam's state, history) or else ``checkpoint.init``; the step to start at."""
        from dgunet.checkpoint import load_weights

        from ..storage import exists, read_bytes

        if exists(self.last_uri):
            ckpt = load_weights(self.model, read_bytes(self.last_uri), name=self.last_uri)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if exists(self.history_uri):
                lines = read_bytes(self.history_uri).decode().splitlines()
                self.history = [json.loads(line) for line in lines if line]
                self.cpu_s = float(self.history[-1].get("cpu_s", 0.0)) if self.history else 0.0
            self._log(f"resumed from {self.last_uri} at step {int(ckpt['step'])}")
            return int(ckpt["step"])
        if self.spec.checkpoint.init:
            load_weights(self.model, read_bytes(self.spec.checkpoint.init), name=self.spec.checkpoint.init)
            self._log(f"initialised from {self.spec.checkpoint.init}")
        return 0

    def place(self, prepare_model: Callable | None) -> None:
        """Move the model (wrapped for data parallelism by ``prepare_model``), Adam's state and the loss."""
        from dgunet.losses import StagesLoss

        self.model = prepare_model(self.model) if prepare_model else self.model.to(self.device)
        _move_optimizer_state(self.optimizer, self.device)
        self.raw_model = self.model.module if hasattr(self.model, "module") else self.model
        self.criterion = StagesLoss(edge_weight=self.spec.optim.edge_weight).to(self.device)
        from ..faults import from_env

        self.failpoints = from_env()
        self.compiled = None  # the model that training steps call, compiled (validation stays eager)
        self.compile_state = "eager"
        if self.spec.optim.compile != "none":
            import torch

            self.compiled = torch.compile(self.model, mode=self.spec.optim.compile)  # compiles at its first call
            self.compile_state = f"compiled ({self.spec.optim.compile})"

    def _forward(self, degraded):
        """The training forward pass: compiled where :attr:`compiled` is set."""
        from ..faults import fires

        if self.compiled is None:
            return self.model(degraded, return_stages=True)
        if fires(self.failpoints, "train.compile", self.spec.task):
            raise RuntimeError("fail point train.compile: CUDA graph capture refused")
        return self.compiled(degraded, return_stages=True)

    def step(self, step: int, degraded, clean, device_ops=None) -> float:
        """One optimizer step on a batch (its noise and blur done here where ``device_ops``); its loss."""
        degraded = degraded.to(self.device, memory_format=self.memory_format, non_blocking=True)
        clean = clean.to(self.device, memory_format=self.memory_format, non_blocking=True)
        if device_ops is not None:
            from dgunet.patches import apply_device_ops

            degraded = apply_device_ops(degraded, device_ops, quantize=self.spec.degradation.quantize)
            degraded = degraded.contiguous(memory_format=self.memory_format)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.spec, self.time_fraction)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with self.autocast:
                stages = self._forward(degraded)
            loss = self.criterion([s.float() for s in stages], clean)
            loss.backward()
        except Exception as exc:  # compiling or capturing failed: the same step again, eagerly, for good
            if self.compiled is None:
                raise
            self.compiled, self.compile_state = None, f"eager (compile failed: {type(exc).__name__}: {exc})"[:400]
            self._log(f"torch.compile ({self.spec.optim.compile}) failed at step {step}; training on eagerly: {exc}")
            return self.step(step, degraded, clean)
        self.optimizer.step()
        return loss.item()

    def validate(self) -> tuple[float, float]:
        """Mean loss and PSNR of the final stage over the validation set."""
        import torch

        self.raw_model.eval()
        losses, psnrs = [], []
        with torch.inference_mode(), self.autocast:
            for degraded, clean in self.data.val:
                degraded = degraded.to(self.device, memory_format=self.memory_format)
                clean = clean.to(self.device)
                stages = [s.float() for s in self.raw_model(degraded, return_stages=True)]
                losses.append(float(self.criterion(stages, clean)))
                psnrs.extend(psnr(o[None], c[None]) for o, c in zip(stages[0], clean))
        self.raw_model.train()
        return float(np.mean(losses)) if losses else float("nan"), float(np.mean(psnrs)) if psnrs else float("nan")

    def checkpoint(self, done: int, window_loss: list[float], elapsed: float) -> dict[str, Any]:
        """The metrics of the steps since the last checkpoint; rank 0 also validates, saves and logs."""
        from dgunet.checkpoint import save_checkpoint
        from dgunet.registry import describe

        from ..storage import write_bytes_atomic

        spec = self.spec
        patch, batch_size = spec.optim.phase(done - 1)
        metrics = {
            "step": done,
            "lr": lr_at(done - 1, spec, self.time_fraction),
            "patch": patch,
            "batch_size": batch_size,
            "train_loss": float(np.mean(window_loss)),
            "seconds_per_step": elapsed / len(window_loss),
            "cpu_s": self.cpu_s,
            "cpu_hours": self.cpu_s / 3600,
            "forward": self.compile_state,
        }
        if self.rank == 0:
            metrics["val_loss"], metrics["val_psnr"] = self.validate()
            self.history.append(metrics)
            save_checkpoint(
                self.last_uri,
                self.raw_model,
                epoch=epochs_done(spec.optim, done, workers=self.world_size, images=len(self.data.train)),
                optimizer=self.optimizer,
                step=done,
                config=describe(self.cfg),
                spec=spec.model_dump(mode="json"),
                meta={"task": spec.task, "val_psnr": metrics["val_psnr"]},
            )
            write_bytes_atomic(self.history_uri, "".join(json.dumps(h) + "\n" for h in self.history).encode())
            self.log(json.dumps(metrics))
        return metrics

    def _log(self, message: str) -> None:
        if self.rank == 0:
            self.log(message)


def fit(
    spec: TrainSpec,
    *,
    device: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    prepare_model: Callable | None = None,
    report: Callable[[dict], None] | None = None,
    time_limit_s: float | None = None,
    save_every_s: float | None = None,
    cpu_limit_s: float | None = None,
    save_every_cpu_s: float | None = None,
    loader_threads: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The training loop, without Ray: the same steps on one process, or on each DDP worker.

    Resumes from ``<checkpoint.uri>/last.pth`` when it exists. Every ``checkpoint.every_steps`` steps
    (and, on a single process, every ``save_every_s`` wall seconds or ``save_every_cpu_s`` CPU seconds)
    rank 0 validates, saves and logs; ``report`` (every rank) receives the same metrics. Returns the last
    metrics.

    Two budgets stop the loop at the first step past them and save there, and the cosine schedule anneals
    over whichever is further on (see :func:`lr_at`): ``time_limit_s``, wall seconds of this call (a GPU
    lease), and ``cpu_limit_s``, this process's CPU seconds of training over every resumed call
    (validation and saving excluded: on a shared CPU, wall time would also count other people's work).

    Args:
        device: ``"cuda"``, ``"cpu"``...; None: CUDA when available.
        rank, world_size: this worker's rank and the number of data-parallel workers (each draws its batch).
        prepare_model: wraps the model for data parallelism (``ray.train.torch.prepare_model``); it must
            also move it to ``device``.
        loader_threads: threads drawing batches ahead of the model (0: in the loop).
    """
    import torch

    t_start = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_training_data(spec)
    if rank == 0:
        log(f"train: {len(data.train)} images; validation: {len(data.val)} images from held-out sources")
    run = _Run(spec, data, device=device, rank=rank, world_size=world_size, log=log)
    start_step = run.resume()
    run.place(prepare_model)
    batches = Batches(spec, data, rank=rank, threads=loader_threads)
    run.model.train()
    metrics: dict[str, Any] = run.history[-1] if run.history else {}
    if cpu_limit_s is not None and run.cpu_s >= cpu_limit_s:
        log(f"CPU budget of {cpu_limit_s:.0f} s already spent ({run.cpu_s:.0f} s)")
        return metrics
    budget = Budget(t_start, time_limit_s, cpu_limit_s, save_every_s, save_every_cpu_s, timed=prepare_model is None)
    try:
        return _train(run, batches, start_step, budget, report=report, log=log) or metrics
    finally:
        batches.close()


def _train(run: _Run, batches: Batches, start_step: int, budget: Budget, *, report, log) -> dict[str, Any]:
    """Steps from ``start_step`` until ``optim.steps`` or the budget; validates and saves as :func:`fit`
    says. Returns the last metrics saved (empty: none)."""
    spec, metrics = run.spec, {}
    window_loss, window_start = [], time.perf_counter()
    budget.saved(window_start, run.cpu_s)
    for step in range(start_step, spec.optim.steps):
        cpu = time.process_time()
        window_loss.append(run.step(step, *batches.get(step)))
        run.cpu_s += time.process_time() - cpu
        done, now = step + 1, time.perf_counter()
        run.time_fraction = budget.fraction(now, run.cpu_s)
        out_of_time = run.time_fraction >= 1
        due = done % spec.checkpoint.every_steps == 0 or done == spec.optim.steps or budget.save_due(now, run.cpu_s)
        if due or out_of_time:
            metrics = run.checkpoint(done, window_loss, now - window_start)
            if report:
                report(metrics)
            window_loss, window_start = [], time.perf_counter()
            budget.saved(window_start, run.cpu_s)
        if out_of_time:
            log(f"budget reached at step {done} ({now - budget.t_start:.0f} s wall, {run.cpu_s:.0f} CPU s of training)")
            break
    return metrics


def _move_optimizer_state(optimizer, device) -> None:
    """Adam's moments follow the model to ``device`` (a checkpoint loads them on the CPU); its step count
    stays on the CPU, where torch keeps it unless the optimizer is fused or capturable."""
    for state in optimizer.state.values():
        for k, v in state.items():
            if k != "step" and hasattr(v, "to"):
                state[k] = v.to(device)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; ``config["spec"]`` is a :class:`TrainSpec` as a dict."""
    import ray.train
    import ray.train.torch
    import torch

    spec = TrainSpec.model_validate(config["spec"])
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))
    fit(
        spec,
        device=str(ray.train.torch.get_device()),
        rank=ray.train.get_context().get_world_rank(),
        world_size=ray.train.get_context().get_world_size(),
        prepare_model=ray.train.torch.prepare_model,  # DDP over the workers, on their device
        report=ray.train.report,
        loader_threads=spec.resources.loader_threads,
    )


def run_training(spec: TrainSpec, *, name: str = "dgunet-train", storage_path: str | None = None):
    """Run the spec on the connected Ray cluster (``ray.init`` first); returns Ray Train's result."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    res = spec.resources
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.model_dump(mode="json")},
        scaling_config=ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": 1} if res.use_gpu else {})},
        ),
        run_config=RunConfig(name=name, storage_path=storage_path),
    )
    return trainer.fit()
