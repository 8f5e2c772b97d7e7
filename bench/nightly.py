"""A year of nightly clean-ups: planning time, driver memory, stats bytes read and stats files, run by run.

    python bench/nightly.py                                   # 100k objects, 365 nights, compact_after 0 and 32
    python bench/nightly.py --objects 20000 --compact-after 0 8 32 128 --measure-every 30
    python bench/nightly.py --s3 --objects 2000 --nights 365 --compact-after 0 32   # on SeaweedFS

An archive of ``--objects`` synthetic objects (an fsspec filesystem, ``nightly://``, that lists keys in
folders of 1,000 with sizes, ETags and modification times, and no bytes) changes every night: it grows by
0.3% (new uploads, in new folders), 0.1% of it is overwritten (a new ETag) and 0.05% is deleted. Each
night's run is simulated: its stats part holds a row for each input it restores (the new and overwritten
ones), its outputs are empty files on local disk, and at its end the earlier runs' parts are compacted
past ``compact_after`` (:func:`pipeline.run.compaction.maybe_compact`; 0: never), as ``restore_bucket.py``
does. On the nights measured (1, 2, every ``--measure-every``-th and the last), the night is planned first
with :func:`pipeline.planning.plan.make_plan`, in this process (no Ray), and the plan must restore exactly
what changed: the per-run line gives planning seconds, the driver's peak RSS during planning (VmHWM, reset
before), the bytes the process read while planning (``rchar``: the stats parts' footers and row groups;
the synthetic listing reads none), and the number of stats files.

The last line compares the last night's planning time with a second run at the same archive size: a fresh
output where one run restored the whole final archive (parts of 5,000 rows, as a run writes them), planned
again. Both are planned ``--repeats`` times in turn, and the fastest of each is compared. Results are
appended to bench/results/nightly.jsonl.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from fsspec import AbstractFileSystem, register_implementation

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT))

from bench.scale import done_stats  # noqa: E402

PER_FOLDER = 1000
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
GROW, OVERWRITE, DELETE = 0.003, 0.001, 0.0005


class Archive:
    """The archive's state, night by night: object i exists from night ``born[i]`` until ``died[i]``, and
    has been overwritten ``version[i]`` times, last on night ``touched[i]``."""

    def __init__(self, objects: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.n, self.night = objects, 0
        cap = objects + PER_FOLDER
        self.born = np.zeros(cap, np.int32)
        self.died = np.full(cap, 1 << 30, np.int32)
        self.version = np.zeros(cap, np.int32)
        self.touched = np.zeros(cap, np.int32)

    def alive(self) -> np.ndarray:
        return np.flatnonzero(self.died[: self.n] > self.night)

    def advance(self) -> np.ndarray:
        """The next night's changes; returns the objects a run must restore (new and overwritten)."""
        self.night += 1
        alive = self.alive()
        new = int(round(len(alive) * GROW))
        over = self.rng.choice(alive, int(round(len(alive) * OVERWRITE)), replace=False)
        rest = np.setdiff1d(alive, over)
        gone = self.rng.choice(rest, int(round(len(alive) * DELETE)), replace=False)
        self.died[gone] = self.night
        self.version[over] += 1
        self.touched[over] = self.night
        first = -(-self.n // PER_FOLDER) * PER_FOLDER  # uploads start a new folder each night
        fresh = np.arange(first, first + new)
        if first + new > len(self.born):
            grow = first + new + 64 * PER_FOLDER - len(self.born)
            self.born = np.concatenate([self.born, np.zeros(grow, np.int32)])
            self.died = np.concatenate([self.died, np.full(grow, 1 << 30, np.int32)])
            self.version = np.concatenate([self.version, np.zeros(grow, np.int32)])
            self.touched = np.concatenate([self.touched, np.zeros(grow, np.int32)])
        self.born[fresh], self.touched[fresh], self.died[self.n : first] = self.night, self.night, 0
        self.n = first + new
        return np.concatenate([over, fresh])

    def entry(self, i: int) -> dict:
        return {
            "name": f"arch/{i // PER_FOLDER:05d}/img{i:08d}.png",
            "size": 7500 + i % 97,
            "type": "file",
            "ETag": f'"{i:024x}{self.version[i]:08x}"',
            "LastModified": T0 + timedelta(days=int(self.touched[i])),
        }


ARCHIVE: Archive | None = None


class NightlyFileSystem(AbstractFileSystem):
    """``nightly://arch``: :data:`ARCHIVE` as it is tonight."""

    protocol = "nightly"
    root_marker = ""

    @staticmethod
    def _rest(path: str) -> list[str]:
        parts = NightlyFileSystem._strip_protocol(path).strip("/").split("/")
        if parts[0] != "arch":
            raise FileNotFoundError(path)
        return parts[1:]

    def _folder(self, f: int) -> list[dict]:
        a = ARCHIVE
        ids = np.arange(f * PER_FOLDER, min(a.n, (f + 1) * PER_FOLDER))
        return [a.entry(int(i)) for i in ids[a.died[ids] > a.night]]

    def _folders(self) -> list[int]:
        a = ARCHIVE
        alive = np.flatnonzero(a.died[: a.n] > a.night)
        return sorted({int(i) // PER_FOLDER for i in alive})

    def info(self, path, **kwargs):
        rest = self._rest(path)
        if len(rest) <= 1:
            if rest and int(rest[0]) not in self._folders():
                raise FileNotFoundError(path)
            return {"name": "/".join(["arch", *rest]), "size": 0, "type": "directory"}
        i = int(rest[1][3:11])
        if not (i < ARCHIVE.n and ARCHIVE.died[i] > ARCHIVE.night):
            raise FileNotFoundError(path)
        return ARCHIVE.entry(i)

    def ls(self, path, detail=True, **kwargs):
        rest = self._rest(path)
        if not rest:
            entries = [{"name": f"arch/{f:05d}", "size": 0, "type": "directory"} for f in self._folders()]
        elif len(rest) == 1:
            entries = self._folder(int(rest[0]))
        else:
            entries = [self.info(path)]
        return entries if detail else [e["name"] for e in entries]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        rest = self._rest(path)
        folders = self._folders() if not rest else [int(rest[0])] if len(rest) == 1 else None
        if folders is None:
            info = self.info(path)
            return {info["name"]: info} if detail else [info["name"]]
        found = {e["name"]: e for f in folders for e in self._folder(f)}
        return found if detail else sorted(found)


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def record_run(ids: np.ndarray, out: Path, run: str, *, part_rows: int = 5000) -> None:
    """What a run that restored ``ids`` leaves: stats parts (rows ``ok``, model ``m``, the version listed
    now) and an empty output file for each."""

    from pipeline.stats import write_stats_part
    from pipeline.storage import describe

    (out / "stats").mkdir(parents=True, exist_ok=True)
    finished = datetime.now(timezone.utc)
    for part, lo in enumerate(range(0, len(ids), part_rows)):
        objs = [describe("nightly", e["name"], e) for e in (ARCHIVE.entry(int(i)) for i in ids[lo : lo + part_rows])]
        outputs = [str(out / "images" / o.uri.split("/", 3)[3]) for o in objs]
        table = done_stats(objs, outputs, run_id=run, finished_at=finished)
        buf = io.BytesIO()
        write_stats_part(table, buf, input_uri="nightly://arch")
        (out / "stats" / f"run-{run}-part-{part:05d}.parquet").write_bytes(buf.getvalue())
        for path in outputs:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()


def plan_now(out: Path) -> dict:
    """Plan tonight's archive into ``out``, measured."""
    from pipeline.planning.plan import make_plan
    from pipeline.stats import stats_files
    from pipeline.storage import StorageOptions

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    read0, t0 = _rchar(), time.perf_counter()
    plan = make_plan(
        input_uri="nightly://arch", output_uri=str(out), model="m", storage=StorageOptions(), distributed=False
    )
    return {
        "plan_s": time.perf_counter() - t0,
        "driver_peak_rss_mb": _vm("VmHWM"),
        "bytes_read": _rchar() - read0,
        "stats_files": len(stats_files(str(out), StorageOptions())),
        "listed": plan.listed,
        "planned": plan.planned,
        "skipped": plan.skipped,
        "vanished": plan.vanished,
    }


def simulate(objects: int, nights: int, compact_after: int, every: int, work: Path) -> list[dict]:
    """One year (``nights``) of nightly runs into a fresh output under ``work``."""
    global ARCHIVE
    from pipeline.run.compaction import maybe_compact
    from pipeline.storage import StorageOptions

    ARCHIVE = Archive(objects)
    out = work / f"out-{compact_after}"
    record_run(ARCHIVE.alive(), out, "n000")  # the first run restored the archive
    lines, compact_s = [], 0.0
    for night in range(1, nights + 1):
        todo = ARCHIVE.advance()
        measured = night in (1, 2, nights) or night % every == 0
        if measured:
            line = {"night": night, "compact_after": compact_after, **plan_now(out)}
            if line["planned"] != len(todo):
                raise AssertionError(f"night {night}: planned {line['planned']}, but {len(todo)} changed")
        record_run(todo, out, f"n{night:03d}")
        t0 = time.perf_counter()
        done = maybe_compact(
            str(out),
            storage=StorageOptions(),
            run_id=f"n{night:03d}",
            input_uri="nightly://arch",
            after=compact_after,
            history_days=0,
        )
        compact_s += time.perf_counter() - t0 if done else 0.0
        if measured:
            line["compaction_s_so_far"] = compact_s
            lines.append(line)
            print(json.dumps(line), flush=True)
    return lines


def second_run(work: Path) -> Path:
    """The output of a second run over the final archive: one run restored it all."""
    out = work / "second"
    record_run(ARCHIVE.alive(), out, "first")
    return out


def compare(last: Path, second: Path, repeats: int) -> tuple[dict, dict]:
    """The final night's plan and the second run's at the same archive size, planned in turn ``repeats``
    times each: the fastest of each (other work on the machine only slows a plan down)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(plan_now(last))
        b.append(plan_now(second))
    return min(a, key=lambda x: x["plan_s"]), min(b, key=lambda x: x["plan_s"])


def simulate_s3(objects: int, nights: int, compact_after: int, every: int) -> list[dict]:
    """The year at small scale on a real S3 server (SeaweedFS on 127.0.0.1, started here): ``objects`` tiny
    objects, changed each night as above with PUTs and DELETEs; each night is planned (in this process),
    its todo rows recorded as a run records them (stats rows, an output object each), and compacted."""
    import s3fs

    from pipeline.planning.plan import make_plan
    from pipeline.run.compaction import maybe_compact
    from pipeline.stats import stats_files
    from pipeline.storage import StorageOptions
    from tests.servers import S3_ENV, SeaweedS3

    os.environ.update(S3_ENV)
    work = Path(tempfile.mkdtemp(prefix="nightly-s3-"))
    server = SeaweedS3(str(work / "weed"))
    lines = []
    try:
        fs, storage = s3fs.S3FileSystem(endpoint_url=server.endpoint), StorageOptions(endpoint_url=server.endpoint)
        fs.mkdir("nightly")
        archive = Archive(objects)
        key = lambda i: f"nightly/arch/{i // PER_FOLDER:05d}/img{i:08d}.png"  # noqa: E731
        fs.pipe({key(int(i)): b"v0" for i in archive.alive()})
        for night in range(0, nights + 1):
            if night:
                before = set(archive.alive().tolist())
                changed = archive.advance()
                fs.pipe({key(int(i)): f"v{archive.version[i]}".encode() for i in changed})
                gone = sorted(before - set(archive.alive().tolist()))
                if gone:
                    fs.rm([key(i) for i in gone])
            Path("/proc/self/clear_refs").write_text("5")
            t0 = time.perf_counter()
            plan = make_plan(
                input_uri="s3://nightly/arch",
                output_uri="s3://nightly/out",
                model="m",
                storage=storage,
                distributed=False,
            )
            line = {
                "night": night,
                "compact_after": compact_after,
                "plan_s": time.perf_counter() - t0,
                "driver_peak_rss_mb": _vm("VmHWM"),
                "stats_files": len(stats_files("s3://nightly/out", storage)),
                "listed": plan.listed,
                "planned": plan.planned,
                "skipped": plan.skipped,
            }
            if night and plan.planned != len(changed):
                raise AssertionError(f"night {night}: planned {plan.planned}, but {len(changed)} changed")
            _record_todo(fs, plan.todo, f"n{night:03d}", storage)
            done = maybe_compact(
                "s3://nightly/out",
                storage=storage,
                run_id=f"n{night:03d}",
                input_uri="s3://nightly/arch",
                after=compact_after,
                history_days=0,
            )
            line["compacted"] = done.sources if done else 0
            if night in (1, 2, nights) or night % every == 0:
                lines.append(line)
                print(json.dumps(line), flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return lines


def _record_todo(fs, todo: list[dict], run: str, storage) -> None:
    """What a run that restored ``todo`` (a plan's rows) leaves on S3: its stats part and an output each."""

    from pipeline.stats import write_stats_part

    if not todo:
        return
    objs = [SimpleNamespace(uri=r["input_uri"], size=r["size"], version=r["version"]) for r in todo]
    outputs = [r["output_uri"] for r in todo]
    table = done_stats(objs, outputs, run_id=run, finished_at=datetime.now(timezone.utc))
    buf = io.BytesIO()
    write_stats_part(table, buf, input_uri="s3://nightly/arch")
    fs.pipe(f"nightly/out/stats/run-{run}-part-00000.parquet", buf.getvalue())
    fs.pipe({r["output_uri"].split("://", 1)[1]: b"png" for r in todo})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--nights", type=int, default=365)
    ap.add_argument("--compact-after", type=int, nargs="+", default=[0, 32])
    ap.add_argument("--measure-every", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="plans of the last night and the second run, in turn")
    ap.add_argument("--s3", action="store_true", help="on a real S3 server (SeaweedFS), at small scale")
    args = ap.parse_args(argv)
    if args.s3:
        RESULTS.mkdir(exist_ok=True)
        with (RESULTS / "nightly.jsonl").open("a") as log:
            for after in args.compact_after:
                lines = simulate_s3(args.objects, args.nights, after, args.measure_every)
                first, last = next(x for x in lines if x["night"] == 2), lines[-1]  # a second run, and the last
                print(
                    f"S3, compact_after {after}: night {last['night']} planned {last['listed']} objects in "
                    f"{last['plan_s']:.2f} s (night 2: {first['listed']} in {first['plan_s']:.2f} s); "
                    f"stats files at most {max(x['stats_files'] for x in lines)}"
                )
                log.write(json.dumps({"bench": "nightly-s3", "objects": args.objects, "runs": lines}) + "\n")
        return 0
    register_implementation("nightly", NightlyFileSystem, clobber=True)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nightly-") as tmp, (RESULTS / "nightly.jsonl").open("a") as log:
        for after in args.compact_after:
            lines = simulate(args.objects, args.nights, after, args.measure_every, Path(tmp))
            last, base = compare(Path(tmp) / f"out-{after}", second_run(Path(tmp)), args.repeats)
            last = {**lines[-1], **last}
            summary = {
                "bench": "nightly",
                "objects": args.objects,
                "nights": args.nights,
                "compact_after": after,
                "archive_at_end": last["listed"],
                "last_plan_s": last["plan_s"],
                "second_run_plan_s": base["plan_s"],
                "ratio_last_to_second": last["plan_s"] / base["plan_s"],
                "stats_files_max": max(x["stats_files"] for x in lines),
                "peak_rss_mb": [round(x["driver_peak_rss_mb"]) for x in lines],
                "bytes_read_last": last["bytes_read"],
                "bytes_read_second": base["bytes_read"],
                "compaction_s_total": last["compaction_s_so_far"],
                "runs": lines,
            }
            print(
                f"compact_after {after}: night {args.nights} planned {last['listed']} objects in "
                f"{last['plan_s']:.2f} s "
                f"vs {base['plan_s']:.2f} s for a second run at that size ({summary['ratio_last_to_second']:.2f}x); "
                f"stats files at most {summary['stats_files_max']}; "
                f"compaction {summary['compaction_s_total']:.1f} s in all"
            )
            log.write(json.dumps(summary) + "\n")
            shutil.rmtree(Path(tmp) / "second", ignore_errors=True)
            shutil.rmtree(Path(tmp) / f"out-{after}", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
