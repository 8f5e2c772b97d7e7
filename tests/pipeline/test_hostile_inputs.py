"""What an archive's files can do to a run: nothing. Disguised formats, FIFOs, devices, links out of the
input, files over the size limit and names that hold terminal escapes each fail or skip their own row,
in a real run over local folders, while the other images are restored."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from jobs.restore_bucket import main
from pipeline.rows import FAILED, OK, Col
from pipeline.stages.formats import READ_FORMATS
from pipeline.stages.read import read_batch
from pipeline.storage import StorageOptions
from tests.images import eps_bytes, photo, psd_bytes
from tests.jobs import save_photos, write_spec

MAX_BYTES = 20_000  # the big PNG below is larger; every other input is smaller
EVIL = "evil\x1b[31m\nrun ok: forged.png"  # an ANSI escape and a newline that would forge a line


def _hostile_archive(tmp_path: Path) -> Path:
    inputs = tmp_path / "in"
    save_photos(inputs, 2)
    (inputs / "disguised.png").write_bytes(eps_bytes())  # PostScript: Ghostscript would run it
    (inputs / "layers.tif").write_bytes(psd_bytes())  # Photoshop, which Pillow would decode
    os.mkfifo(inputs / "pipe.png")  # a read would wait for a writer forever
    private = tmp_path / "private"
    private.mkdir()
    Image.fromarray(photo(24, 32, seed=9)).save(private / "secret.png")
    (inputs / "outside.png").symlink_to(private / "secret.png")  # a link out of the input
    (inputs / "zero.png").symlink_to("/dev/zero")  # endless bytes
    (inputs / "inside.png").symlink_to(inputs / "img0.png")  # a link within the input: followed
    big = np.random.default_rng(1).integers(0, 256, (128, 128, 3), np.uint8)
    Image.fromarray(big).save(inputs / "big.png")
    assert (inputs / "big.png").stat().st_size > MAX_BYTES
    (inputs / EVIL).write_bytes(b"not an image")
    return inputs


@pytest.mark.slow
@pytest.mark.timeout(300)  # a bound that only a hang reaches: the run takes well under a minute
def test_hostile_files_fail_or_are_skipped_alone_and_the_rest_restore(ray_local, tmp_path, tiny_weights, capsys):
    inputs, out = _hostile_archive(tmp_path), tmp_path / "out"
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_weights,
        input_uri=str(inputs),
        output={"uri": str(out)},
        resources={"cpus_per_actor": 1, "batch_size": 2, "min_actors": 1, "max_actors": 1},
        input_keys={"max_bytes": MAX_BYTES},
    )
    assert main(["--spec", str(spec), "--run-id", "hostile"]) == 1  # inputs failed; the run ended
    printed = capsys.readouterr().out

    stats = pads.dataset(str(out / "stats"), format="parquet").to_table().to_pylist()
    rows = {os.path.basename(r["input_uri"]): r for r in stats}
    assert set(rows) == {"img0.png", "img1.png", "inside.png", "disguised.png", "layers.tif", "big.png", EVIL}
    for name in ("img0.png", "img1.png", "inside.png"):
        assert rows[name]["status"] == OK and Path(rows[name]["output_uri"]).is_file(), rows[name]
    read = f"a format that is read ({', '.join(READ_FORMATS)})"
    assert rows["disguised.png"]["error"] == f"decode: Expected an image in {read}, but got EPS (PostScript) instead."
    assert rows["layers.tif"]["error"] == f"decode: Expected an image in {read}, but got PSD (Photoshop) instead."
    assert rows["big.png"]["error"].startswith(f"read: Expected at most input.max_bytes = {MAX_BYTES} bytes")
    assert {rows[n]["status"] for n in ("disguised.png", "layers.tif", "big.png", EVIL)} == {FAILED}
    # The FIFO, /dev/zero and the private image are not listed: nothing of them is restored or shown.
    written = {p.name for p in (out / "images").iterdir()}
    assert written == {"img0.png", "img1.png", "inside.png"}
    assert "secret" not in (out / "reports" / "hostile.html").read_text()

    # The name is kept as it is in the stats, and printed escaped: no escape reaches the terminal, no line forged.
    assert "\x1b" not in printed
    assert not any(line.startswith("run ok: forged") for line in printed.splitlines())
    assert "evil\\x1b[31m\\nrun ok: forged.png" in printed


def _row(uri: str, size: int) -> dict:
    return {
        Col.INPUT_URI: np.array([uri], dtype=object),
        Col.SIZE: np.array([size], np.int64),
        Col.VERSION: np.array(["v"], dtype=object),
    }


@pytest.mark.timeout(60)
def test_the_read_stage_reads_no_more_than_max_bytes_and_no_special_file(tmp_path):
    """A file larger than its listing said (it grew, or the store lied), ``/dev/zero`` and a FIFO named in a
    manifest each fail their own row at once; a file within the limit is read whole."""
    (tmp_path / "grew.png").write_bytes(b"x" * 5000)
    (tmp_path / "fine.png").write_bytes(b"y" * 100)
    os.mkfifo(tmp_path / "pipe.png")
    cases = {
        str(tmp_path / "grew.png"): (10, "read: Expected at most input.max_bytes = 1000 bytes, but got more instead"),
        "/dev/zero": (0, "read: Expected a regular file, but got a character device instead."),
        str(tmp_path / "pipe.png"): (0, "read: Expected a regular file, but got a FIFO instead."),
        str(tmp_path / "huge.png"): (10**12, "read: Expected at most input.max_bytes = 1000 bytes, but got"),
    }
    for uri, (size, error) in cases.items():
        out = read_batch(_row(uri, size), storage=StorageOptions(), threads=1, max_bytes=1000)
        assert out[Col.STATUS][0] == FAILED and out[Col.ERROR][0].startswith(error), (uri, out[Col.ERROR][0])
        assert out[Col.DATA][0] == b""
    out = read_batch(_row(str(tmp_path / "fine.png"), 100), storage=StorageOptions(), threads=1, max_bytes=1000)
    assert (out[Col.STATUS][0], out[Col.DATA][0]) == (OK, b"y" * 100)
