"""The output prefix is data, not instructions: files in it that others may write (the stats, the compaction
journal) cannot steer a run's writes or deletes out of it, and an input and an output that hold each
other are refused before anything starts."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.restore_bucket import main
from pipeline.planning.earlier import Earlier
from pipeline.planning.settle import trusted_rows
from pipeline.run.compaction import recover
from pipeline.storage import StorageOptions
from tests.images import photo
from tests.jobs import save_photos, write_spec


def _spec(tmp_path: Path, weights, inputs: Path, out: Path) -> Path:
    resources = {"cpus_per_actor": 1, "batch_size": 2, "min_actors": 1, "max_actors": 1}
    return write_spec(
        tmp_path / "spec.yaml", weights, input_uri=str(inputs), output={"uri": str(out)}, resources=resources
    )


@pytest.mark.parametrize("case", ["input in output", "output in input through a link", "input in output via .."])
def test_an_input_and_an_output_that_hold_each_other_exit_2_before_anything_starts(
    tmp_path, tiny_weights, capsys, case
):
    out, inputs = tmp_path / "out", tmp_path / "in"
    save_photos(inputs, 1)
    (tmp_path / "alias").symlink_to(inputs, target_is_directory=True)
    given = {
        "input in output": (out / "images", out),
        "output in input through a link": (inputs, tmp_path / "alias" / "restored"),
        "input in output via ..": (Path(f"{out}/images/../images"), out),
    }[case]
    spec = _spec(tmp_path, tiny_weights, *given)
    assert main(["--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    # The spec's error: a line naming the spec file, and one naming the problem.
    assert [line for line in err.splitlines() if "must not be inside" in line] == err.splitlines()[1:], err
    assert not out.exists() and not (inputs / "restored").exists()  # nothing was locked or written


def test_a_stats_row_whose_output_lies_elsewhere_is_ignored_with_a_warning(caplog):
    earlier = {
        "/in/a.png": Earlier(True, "/out/images/a.png", False, "v", 1, 1.0),
        "/in/b.png": Earlier(True, "/home/me/.bashrc", False, "v", 1, 1.0),
        "/in/c.png": Earlier(True, "/out/images/../../etc/c.png", False, "v", 1, 1.0),
        "/in/d.png": Earlier(False, None, True, "v", 1, 1.0),
    }
    with caplog.at_level(logging.WARNING, logger="pipeline.planning.settle"):
        kept = trusted_rows(earlier, output_uri="/out")
    assert set(kept) == {"/in/a.png", "/in/d.png"}
    assert "/home/me/.bashrc" in caplog.text and "/out/images/../../etc/c.png" in caplog.text


def test_a_forged_compaction_journal_deletes_nothing_outside_stats(tmp_path, caplog):
    out, victim = tmp_path / "out", tmp_path / "precious.txt"
    victim.write_text("keep me")
    (out / "stats").mkdir(parents=True)
    own = out / "stats" / "run-x-part-00000.parquet"
    own.write_bytes(b"an old part")
    journal = {"id": "forged", "state": "written", "sources": [str(victim), str(own)], "parts": [], "history": None}
    (out / "stats" / "_compaction.json").write_text(json.dumps(journal))
    with caplog.at_level(logging.WARNING, logger="pipeline.run.compaction"):
        recover(str(out), StorageOptions())
    assert victim.read_text() == "keep me" and str(victim) in caplog.text
    assert not own.exists() and not (out / "stats" / "_compaction.json").exists()  # its own part goes, as before
    undo = {"id": "f2", "state": "writing", "sources": [], "parts": [str(victim)], "history": str(victim)}
    (out / "stats" / "_compaction.json").write_text(json.dumps(undo))
    recover(str(out), StorageOptions())
    assert victim.read_text() == "keep me"


@pytest.mark.slow
def test_a_forged_stats_row_cannot_send_a_write_out_of_the_output(ray_local, tmp_path, tiny_weights):
    """A stats row rewritten to name a file outside the output as img0's output: the next run, which redoes
    img0 (its bytes changed), writes under ``images/`` and leaves that file as it was."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    save_photos(inputs, 2)
    spec = _spec(tmp_path, tiny_weights, inputs, out)
    assert main(["--spec", str(spec), "--run-id", "first"]) == 0
    victim = tmp_path / "elsewhere" / "victim.png"
    victim.parent.mkdir()
    victim.write_bytes(b"the victim's own bytes")
    for part in (out / "stats").glob("*.parquet"):
        table = pq.read_table(part)
        outs = [str(victim) if u.endswith("img0.png") else u for u in table.column("output_uri").to_pylist()]
        i = table.schema.get_field_index("output_uri")
        pq.write_table(table.set_column(i, table.schema.field(i), pa.array(outs, pa.string())), part)
    Image.fromarray(photo(24, 32, seed=7)).save(inputs / "img0.png")  # changed: to be restored again

    assert main(["--spec", str(spec), "--run-id", "second"]) == 0
    assert victim.read_bytes() == b"the victim's own bytes"
    rows = [r for p in (out / "stats").glob("run-second-*.parquet") for r in pq.read_table(p).to_pylist()]
    assert [(Path(r["input_uri"]).name, r["output_uri"]) for r in rows] == [
        ("img0.png", str(out / "images" / "img0.png"))
    ]


@pytest.mark.parametrize("run_id", ["../../x", "..", ".", "a/b", "evil\nline", ""])
def test_a_run_id_that_is_not_one_plain_name_exits_2_before_anything_starts(tmp_path, tiny_weights, capsys, run_id):
    inputs, out = tmp_path / "in", tmp_path / "out"
    save_photos(inputs, 1)
    assert main(["--spec", str(_spec(tmp_path, tiny_weights, inputs, out)), "--run-id", run_id]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--run-id: expected letters, digits") and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o600), (0o022, 0o644)])
def test_outputs_are_created_as_the_process_umask_says(tmp_path, umask, mode):
    """Every output (images, stats parts, summaries, reports) is written by ``write_bytes_atomic``: run with
    ``umask 077`` and restored copies of private images stay private."""
    from pipeline.storage import write_bytes_atomic

    old = os.umask(umask)
    try:
        write_bytes_atomic(str(tmp_path / "out" / "images" / "a.png"), b"restored")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "images" / "a.png").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "out" / "images").stat().st_mode) == 0o777 & ~umask
