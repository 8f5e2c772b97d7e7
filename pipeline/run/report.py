"""The run report: ``<output>/reports/<run_id>.html``, one self-contained page per run.

It shows before/after pairs (a random sample of the run, and its worst and best images by the quality
measure), histograms of the quality stats, throughput over time, and the failures with their reasons.

:class:`ReportCollector` takes the stats rows as the driver streams them and keeps only bounded state:
fixed-bin histograms, a throughput timeline whose buckets widen as the run grows, a reservoir sample of
rows and the few worst and best. The counts and the failures it shows come from the run's
:class:`~pipeline.run.tally.RunTally`, which the summary counts with whether or not a page is drawn. The page
therefore has the same size for a run of a hundred images and of millions; only the images it shows are
read back.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..rows import OK
from .tally import RunTally

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measure:
    column: str
    label: str
    lo: float
    hi: float
    log10: bool = False
    higher_is_better: bool = True


# Histogram bins are fixed in advance (streaming); values outside [lo, hi] land in the end bins.
HISTOGRAMS = [
    (Measure("noise_before", "estimated noise σ (8-bit levels)", 0, 40), "noise_after"),
    (Measure("sharpness_before", "sharpness (Laplacian variance)", -5, 0, log10=True), "sharpness_after"),
    (Measure("psnr_before", "PSNR against the reference (dB)", 10, 50), "psnr_after"),
    (Measure("ssim_before", "SSIM against the reference", 0, 1), "ssim_after"),
]
BINS = 40
TIMELINE_BUCKETS = 600  # the timeline's bucket width doubles whenever it would need more


# The measures a report can rank by, by stats column (a task's row names its own: dgunet/tasks.py).
RANKINGS = {
    m.column: m
    for m in (
        Measure("psnr_after", "PSNR (dB)", 10, 50),
        Measure("sharpness_after", "sharpness", 0, 1),
        Measure("noise_after", "residual noise σ", 0, 40, higher_is_better=False),
    )
}


def ranking_measure(task: str, paired: bool) -> Measure:
    """What "worst" and "best" mean: PSNR with references; else the task's own ranking (``task: auto``:
    residual noise)."""
    from dgunet.tasks import TASKS

    if paired:
        return RANKINGS["psnr_after"]
    return RANKINGS[TASKS[task].ranking if task in TASKS else "noise_after"]


class ReportCollector:
    """Bounded-memory pictures of a run's stats rows, rendered by :meth:`render` with the run's tally."""

    def __init__(self, *, start: float, rank: Measure, sample: int = 8, extremes: int = 4, seed: int = 0):
        """``start``: the run's start (epoch seconds), the origin of the throughput timeline; ``rank``: what
        orders the worst and best images (see :func:`ranking_measure`)."""
        self.sample_size, self.extremes = sample, extremes
        self.rng = random.Random(seed)
        columns = [m.column for m, _ in HISTOGRAMS] + [after for _, after in HISTOGRAMS]
        self.hist = {column: np.zeros(BINS, np.int64) for column in columns}
        self.timeline: Counter[int] = Counter()  # bucket index -> images finished
        self.bucket_seconds, self.t0 = 1, start
        self.sample: list[dict] = []
        self.worst: list[tuple] = []  # heaps of (key, tiebreak, row)
        self.best: list[tuple] = []
        self.ok = 0  # ok rows seen: the reservoir's denominator
        self.rank = rank

    def add(self, table: pa.Table) -> None:
        rows = table.select(
            ["input_uri", "output_uri", "status", "finished_at"]
            + [m.column for m, _ in HISTOGRAMS]
            + [after for _, after in HISTOGRAMS]
        ).to_pylist()
        for row in rows:
            self._add(row)

    def _add(self, row: dict) -> None:
        if row["finished_at"] is not None:
            self._tick(row["finished_at"].timestamp())
        if row["status"] != OK:
            return
        self.ok += 1
        for before, after in HISTOGRAMS:
            for m, column in ((before, before.column), (before, after)):
                value = row.get(column)
                if value is not None and math.isfinite(value):
                    self.hist[column][_bin(m, value)] += 1
        # Reservoir sample (Algorithm R) of ok rows: uniform over the run, whatever its length.
        if len(self.sample) < self.sample_size:
            self.sample.append(row)
        else:
            j = self.rng.randrange(self.ok)
            if j < self.sample_size:
                self.sample[j] = row
        value = row.get(self.rank.column)
        if value is not None and math.isfinite(value):
            good = value if self.rank.higher_is_better else -value
            tiebreak = self.ok
            _push_bounded(self.best, (good, tiebreak, row), self.extremes)
            _push_bounded(self.worst, (-good, tiebreak, row), self.extremes)

    def _tick(self, t: float) -> None:
        index = max(0, int((t - self.t0) // self.bucket_seconds))
        while index >= TIMELINE_BUCKETS:  # widen the buckets: merge pairs
            merged: Counter[int] = Counter()
            for k, v in self.timeline.items():
                merged[k // 2] += v
            self.timeline, self.bucket_seconds = merged, self.bucket_seconds * 2
            index //= 2
        self.timeline[index] += 1

    # ---------------------------------------------------------------- rendering

    def render(self, summary, tally: RunTally, *, max_pixels: int, storage=None) -> str:
        """The page, as one HTML string; reads the images it shows (a few dozen at most).

        Args:
            summary: the run's :class:`~pipeline.run.summary.RunSummary`.
            tally: the run's counts, time and failures, taken from the same rows as this collector's.
        """
        t0 = time.perf_counter()
        worst = [r for _, _, r in sorted(self.worst, reverse=True)]
        best = [r for _, _, r in sorted(self.best, reverse=True)]
        rank = self.rank
        pairs: dict[str, tuple[str, str]] = {}  # input URI -> the pair's data URIs: an image shown twice is read once

        def load(row: dict) -> tuple[str, str]:
            if row["input_uri"] not in pairs:
                before, after = _load_pair(row, max_pixels, storage)
                pairs[row["input_uri"]] = (_data_uri(before), _data_uri(after))
            return pairs[row["input_uri"]]

        sections = [
            _head(summary),
            _numbers(summary, tally),
            _pairs("A random sample of the run", self.sample, rank, load),
        ]
        order = ("lowest", "highest") if rank.higher_is_better else ("highest", "lowest")
        sections.append(_pairs(f"Worst: {order[0]} {rank.label}", worst, rank, load))
        sections.append(_pairs(f"Best: {order[1]} {rank.label}", best, rank, load))
        sections.append(_histograms(self))
        sections.append(_timeline(self))
        sections.append(_failures(tally))
        log.info("Report rendered in %.1f s.", time.perf_counter() - t0)
        return "\n".join(sections) + _TAIL


def _push_bounded(heap: list, item: tuple, k: int) -> None:
    if len(heap) < k:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def _bin(m: Measure, value: float) -> int:
    if m.log10:
        value = math.log10(max(value, 1e-12))
    return min(BINS - 1, max(0, int((value - m.lo) / (m.hi - m.lo) * BINS)))


# ------------------------------------------------------------------ HTML pieces

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#1d2329;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
.sub{color:#5a6470} .num{display:inline-block;margin:8px 24px 8px 0} .num b{display:block;font-size:22px}
.pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}
figure{margin:0;border:1px solid #dde;border-radius:6px;padding:8px;background:#fafbfc}
figure .row{display:flex;gap:6px} figure img{width:50%;image-rendering:pixelated;border-radius:3px}
figcaption{font-size:12px;color:#5a6470;word-break:break-all;margin-top:4px}
table{border-collapse:collapse;font-size:12.5px;width:100%} td,th{border-bottom:1px solid #eef;padding:3px 6px;
text-align:left;vertical-align:top} td.n{text-align:right;white-space:nowrap}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
svg{background:#fff;border:1px solid #dde;border-radius:6px} .legend span{margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
"""

# Marks the page, at its load event, with how many embedded images loaded with pixels (a broken one has
# no natural width), so a headless browser can confirm it rendered. Set synchronously at load, the marks
# are there whenever the browser dumps the page after loading it.
_TAIL = """
<script>
addEventListener("load", () => {
  const imgs = [...document.images];
  document.documentElement.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.documentElement.dataset.imagesTotal = imgs.length;
});
</script>
</body></html>
"""


def _head(summary) -> str:
    e = html.escape
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Run {e(summary.run_id)}</title>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head><body>"
        f"<h1>Restore run {e(summary.run_id)}</h1>"
        f"<div class=sub>{e(summary.model)}<br>{e(summary.input_uri)} → {e(summary.output_uri)}</div>"
    )


def _numbers(summary, tally: RunTally) -> str:
    items = [
        ("restored", f"{summary.ok - tally.passed:,}"),
        ("passed through", f"{tally.passed:,}"),
        *(
            (f"routed to {task}", f"{n:,}")
            for task, n in sorted(tally.routes.items())
            if tally.detected and task != "passed"
        ),
        ("failed", f"{summary.failed:,}"),
        ("skipped (done before)", f"{summary.skipped:,}"),
        ("images/s", f"{summary.images_per_second:.2f}"),
        ("megapixels/s", f"{summary.megapixels_per_second:.2f}"),
        ("wall time", _duration(summary.wall_seconds)),
        ("model time per image", f"{tally.metrics()['model_seconds_per_image']:.3f} s"),
    ]
    cells = "".join(f"<span class=num><b>{html.escape(v)}</b>{html.escape(k)}</span>" for k, v in items)
    link = ""
    if summary.dashboard_url:
        url = html.escape(summary.dashboard_url)
        link = f"<div class=sub>Ray dashboard: <a href='{url}'>{url}</a></div>"
    return f"<div>{cells}</div>{link}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pairs(title: str, rows: list[dict], rank: Measure, load) -> str:
    if not rows:
        return f"<h2>{html.escape(title)}</h2><p class=sub>No restored images.</p>"
    figures = []
    for row in rows:
        try:
            before, after = load(row)
        except Exception as exc:  # the page still renders; it says which image could not be shown
            why = html.escape(f"{row['input_uri']}: not shown ({exc})")
            figures.append(f"<figure><figcaption>{why}</figcaption></figure>")
            continue
        caption = html.escape(row["input_uri"])
        if row.get(rank.column) is not None:
            caption += f"<br>{html.escape(rank.label)}: {row[rank.column]:.3g}"
        if row.get("noise_before") is not None and row.get("noise_after") is not None:
            caption += f" · noise σ {row['noise_before']:.2f} → {row['noise_after']:.2f}"
        figures.append(
            "<figure><div class=row>"
            f"<img alt=before title=before src='{before}'><img alt=after title=after src='{after}'>"
            f"</div><figcaption>before | after, 1:1 centre crop · {caption}</figcaption></figure>"
        )
    return f"<h2>{html.escape(title)}</h2><div class=pairs>{''.join(figures)}</div>"


CROP = 176  # side of the 1:1 centre crops shown side by side


def _load_pair(row: dict, max_pixels: int, storage) -> tuple[np.ndarray, np.ndarray]:
    from ..stages.decode import decode_image
    from ..storage import read_bytes

    before = decode_image(read_bytes(row["input_uri"], storage), max_pixels=max_pixels).pixels
    after = decode_image(read_bytes(row["output_uri"], storage), max_pixels=max_pixels).pixels
    return _crop(before), _crop(after)


def _crop(img: np.ndarray) -> np.ndarray:
    """A 1:1 centre crop as 8-bit gray or RGB (alpha dropped): noise and detail show at full scale."""
    from ..quality import center_crop

    img = center_crop(img, CROP)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return img[..., :1] if img.shape[2] in (1, 2) else img[..., :3]


def _data_uri(img: np.ndarray) -> str:
    from PIL import Image

    pil = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
    buf = io.BytesIO()
    pil.save(buf, format="WEBP", quality=82, method=4)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode()


def _histograms(c: ReportCollector) -> str:
    charts = []
    for before, after in HISTOGRAMS:
        b, a = c.hist[before.column], c.hist[after]
        if not b.sum() and not a.sum():
            continue
        charts.append(_bar_chart(before, b, a))
    if not charts:
        return "<h2>Quality</h2><p class=sub>No quality measures in this run.</p>"
    legend = (
        "<div class=legend><span><i class=sw style='background:#9aa5b1'></i>before</span>"
        "<span><i class=sw style='background:#2b7bb9'></i>after</span></div>"
    )
    return f"<h2>Quality</h2>{legend}<div class=charts>{''.join(charts)}</div>"


def _bar_chart(m: Measure, before: np.ndarray, after: np.ndarray, w: int = 360, h: int = 170) -> str:
    top = max(int(before.max()), int(after.max()), 1)
    pad, bw = 28, (w - 16) / BINS
    bars = []
    for i in range(BINS):
        for counts, color, dx in ((before, "#9aa5b1", 0.0), (after, "#2b7bb9", bw / 2)):
            bh = counts[i] / top * (h - pad - 14)
            if bh > 0:
                bars.append(
                    f"<rect x='{8 + i * bw + dx:.1f}' y='{h - pad - bh:.1f}' width='{bw / 2:.1f}' height='{bh:.1f}' "
                    f"fill='{color}'><title>{int(counts[i])}</title></rect>"
                )
    lo, hi = (f"1e{m.lo:g}", f"1e{m.hi:g}") if m.log10 else (f"{m.lo:g}", f"{m.hi:g}")
    return (
        f"<svg viewBox='0 0 {w} {h}' width='{w}' height='{h}' role=img aria-label='{html.escape(m.label)}'>"
        f"<text x='8' y='14' font-size='12'>{html.escape(m.label)}</text>{''.join(bars)}"
        f"<line x1='8' x2='{w - 8}' y1='{h - pad}' y2='{h - pad}' stroke='#889'/>"
        f"<text x='8' y='{h - 10}' font-size='11'>{lo}</text>"
        f"<text x='{w - 8}' y='{h - 10}' font-size='11' text-anchor='end'>{hi}</text>"
        f"<text x='{w - 8}' y='14' font-size='11' text-anchor='end' fill='#5a6470'>max {top:,} images</text></svg>"
    )


def _timeline(c: ReportCollector, w: int = 1100, h: int = 180) -> str:
    if not c.timeline:
        return ""
    n = max(c.timeline) + 1
    rates = [c.timeline.get(i, 0) / c.bucket_seconds for i in range(n)]
    top = max(rates) or 1.0
    pad, bw = 24, (w - 16) / n
    bars = "".join(
        f"<rect x='{8 + i * bw:.2f}' y='{h - pad - r / top * (h - pad - 20):.1f}' width='{max(bw - 0.5, 0.5):.2f}' "
        f"height='{r / top * (h - pad - 20):.1f}' fill='#2b7bb9'/>"
        for i, r in enumerate(rates)
        if r > 0
    )
    return (
        "<h2>Throughput over time</h2>"
        f"<svg viewBox='0 0 {w} {h}' width='100%' role=img aria-label='images per second over time'>{bars}"
        f"<line x1='8' x2='{w - 8}' y1='{h - pad}' y2='{h - pad}' stroke='#889'/>"
        f"<text x='8' y='14' font-size='12'>images/s in {c.bucket_seconds} s buckets from the start of the run "
        f"(peak {top:.2f})</text><text x='8' y='{h - 6}' font-size='11'>0</text>"
        f"<text x='{w - 8}' y='{h - 6}' font-size='11' text-anchor='end'>{_duration(n * c.bucket_seconds)}</text></svg>"
    )


def _failures(tally: RunTally) -> str:
    total = tally.failed
    if not total:
        return "<h2>Failures</h2><p class=sub>None.</p>"
    e = html.escape
    kinds = "".join(f"<tr><td class=n>{n:,}</td><td>{e(k)}</td></tr>" for k, n in tally.reasons.most_common(30))
    rows = "".join(f"<tr><td>{e(f['input_uri'])}</td><td>{e(f['error'] or '')}</td></tr>" for f in tally.failures)
    more = (
        f"<p class=sub>The first {len(tally.failures):,} of {total:,} are listed; the stats have all.</p>"
        if total > len(tally.failures)
        else ""
    )
    return (
        f"<h2>Failures ({total:,})</h2><table><tr><th>images</th><th>kind</th></tr>{kinds}</table>"
        f"<h2>Failed inputs</h2>{more}<table><tr><th>input</th><th>reason</th></tr>{rows}</table>"
    )
