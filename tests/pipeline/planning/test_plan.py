"""Planning: output names, unsafe keys, collisions, and the incremental skip."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.planning.earlier import LEGACY_MARGIN
from pipeline.planning.names import relative_key, safe_relative
from pipeline.planning.plan import make_plan
from pipeline.rows import STATS_SCHEMA
from pipeline.stats import write_stats_part
from pipeline.storage import StorageOptions, list_objects

NONE = StorageOptions()


@pytest.fixture(autouse=True, params=["here", "ray"])
def planner(request, monkeypatch):
    """Every test plans twice: in this process, and as a Ray Data computation on a local Ray (the same
    stages, over hash partitions; stores only this process reaches are always planned here)."""
    import pipeline.planning.plan

    if request.param == "ray":
        request.getfixturevalue("ray_local")
        monkeypatch.setattr(pipeline.planning.plan, "PARTITIONS", 3)
    use_ray = pipeline.planning.plan._use_ray
    monkeypatch.setattr(pipeline.planning.plan, "_use_ray", lambda *uris: request.param == "ray" and use_ray(*uris))
    return request.param


LAYOUT = {"parts": "sorted"}


@pytest.fixture(autouse=True, params=["sorted", "plain"])
def parts(request):
    """And twice again: earlier stats parts as runs write them (sorted for planning, planned without a
    shuffle), and plain (as runs wrote them before, or a manifest run: planned through the shuffles)."""
    LAYOUT["parts"] = request.param
    return request.param


def test_relative_keys_are_made_safe():
    assert safe_relative("a/../../etc/passwd") == "a/%2E%2E/%2E%2E/etc/passwd"
    assert safe_relative("/abs//./x.png") == "abs/x.png"
    assert relative_key("s3://b/in/x/y.png", "s3://b/in/") == "x/y.png"
    assert relative_key("s3://b/in/y.png", "s3://b/in/y.png") == "y.png"


def _touch(root, *names):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def _version(path) -> str:
    return next(list_objects(str(path))).version


def _stats(out, rows, name="run-old-part-00000.parquet", schema=STATS_SCHEMA, input_uri=None):
    """A stats part under ``out`` (of a run over ``input_uri``: by default ``in`` beside ``out``)."""
    (out / "stats").mkdir(parents=True, exist_ok=True)
    full = [{k: r.get(k) for k in schema.names} for r in rows]
    table = pa.Table.from_pylist(full, schema=schema)
    if LAYOUT["parts"] == "sorted":
        write_stats_part(table, out / "stats" / name, input_uri=str(input_uri or out.parent / "in"))
    else:
        pq.write_table(table, out / "stats" / name)


def test_names_mirror_inputs_and_collisions_do_not_overwrite(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "a.jpg", "a.png", "sub/b.TIF", "notes.txt")
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
    names = {r["input_uri"].rsplit("/in/", 1)[1]: r["output_uri"].rsplit("/images/", 1)[1] for r in plan.todo}
    assert names == {"a.jpg": "a.png", "a.png": "a.png.png", "sub/b.TIF": "sub/b.png"}
    assert plan.listed == 3 and plan.skipped == 0


def test_done_inputs_are_skipped_and_keep_their_names(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "a.png", "b.png", "c.png")
    _touch(out / "images", "a.png", "c.png")  # b's output went missing

    def ok(name, model="m"):
        out_uri = str(out / "images" / name)
        return {
            "input_uri": str(src / name),
            "output_uri": out_uri,
            "status": "ok",
            "model": model,
            "run_id": "old",
            "input_version": _version(src / name),
        }

    _stats(out, [ok("a.png"), ok("b.png"), ok("c.png", model="other")])
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
    todo = sorted(r["input_uri"].rsplit("/", 1)[1] for r in plan.todo)
    assert plan.skipped == 1 and todo == ["b.png", "c.png"]  # b: output missing; c: another model


def test_new_upload_never_takes_an_earlier_name(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "z.jpg")
    _touch(out / "images", "z.png")
    _stats(
        out,
        [
            {
                "input_uri": str(src / "z.jpg"),
                "output_uri": str(out / "images" / "z.png"),
                "status": "ok",
                "model": "m",
                "run_id": "old",
                "input_version": _version(src / "z.jpg"),
            }
        ],
    )
    _touch(src, "z.png")  # a later upload that maps to the same name
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
    assert [r["output_uri"] for r in plan.todo] == [str(out / "images" / "z.png.png")]


def test_unchanged_undecodable_inputs_are_not_retried(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "bad.png", "changed.png")
    rows = [
        {
            "input_uri": str(src / n),
            "status": "failed",
            "error": "decode: truncated",
            "model": "m",
            "input_bytes": 1,
            "input_version": version,
            "run_id": "old",
        }
        for n, version in (("bad.png", _version(src / "bad.png")), ("changed.png", "size=1 mtime_ns=1"))
    ]
    _stats(out, rows)
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
    assert plan.still_bad == 1 and [r["input_uri"] for r in plan.todo] == [str(src / "changed.png")]


def test_manifest_and_reference(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "x/1.png", "x/2.png")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# inputs\n{src / 'x/2.png'}\n\n")
    plan = make_plan(
        input_uri=str(src),
        output_uri=str(out),
        model="m",
        storage=NONE,
        manifest=str(manifest),
        reference=str(tmp_path / "ref"),
    )
    assert [r["input_uri"] for r in plan.todo] == [str(src / "x/2.png")]
    assert plan.todo[0]["reference_uri"] == str(tmp_path / "ref" / "x/2.png")


def _ok_row(src, out, name, **extra):
    return {
        "input_uri": str(src / name),
        "output_uri": str(out / "images" / name),
        "status": "ok",
        "model": "m",
        "run_id": "old",
        "input_version": _version(src / name),
        **extra,
    }


def test_overwritten_inputs_are_restored_again_whatever_their_size(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "same.png", "bigger.png", "untouched.png")
    _touch(out / "images", "same.png", "bigger.png", "untouched.png")
    _stats(out, [_ok_row(src, out, n) for n in ("same.png", "bigger.png", "untouched.png")])
    (src / "same.png").write_bytes(b"y")  # same size, other bytes
    (src / "bigger.png").write_bytes(b"xyz")
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
    todo = {r["input_uri"].rsplit("/", 1)[1]: r for r in plan.todo}
    assert sorted(todo) == ["bigger.png", "same.png"] and (plan.skipped, plan.changed) == (1, 2)
    assert todo["same.png"]["output_uri"] == str(out / "images" / "same.png")  # restored over its old output
    assert todo["same.png"]["version"] == _version(src / "same.png")


def test_vanished_inputs_are_counted_and_their_outputs_kept(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "a.png", "b.png")
    _touch(out / "images", "a.png", "b.png")
    _stats(out, [_ok_row(src, out, "a.png"), _ok_row(src, out, "b.png")])
    (src / "b.png").unlink()
    _touch(src, "b.jpg")  # a new upload that would take b's output name
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
    assert (plan.skipped, plan.vanished, plan.listed) == (1, 1, 2)
    assert [r["output_uri"] for r in plan.todo] == [str(out / "images" / "b.jpg.png")]


def test_rows_from_before_versions_vouch_only_for_inputs_unchanged_since(tmp_path):
    """Stats parts without the input_version column still read; such a row skips its input only where
    the input has the row's size and was last modified well before the row was written."""
    import os
    from datetime import datetime, timedelta, timezone

    src, out = tmp_path / "in", tmp_path / "out"
    names = ("old.png", "resized.png", "touched.png", "new-row.png")
    _touch(src, *names)
    _touch(out / "images", *names)
    now = datetime.now(timezone.utc)
    for n in names:
        os.utime(src / n, (now.timestamp() - 3 * LEGACY_MARGIN,) * 2)
    os.utime(src / "touched.png", (now.timestamp() - LEGACY_MARGIN / 2,) * 2)  # written after the row
    (src / "resized.png").write_bytes(b"xx")
    os.utime(src / "resized.png", (now.timestamp() - 3 * LEGACY_MARGIN,) * 2)
    legacy = pa.schema([f for f in STATS_SCHEMA if f.name != "input_version"])
    written = now - timedelta(seconds=LEGACY_MARGIN)
    rows = [{**_ok_row(src, out, n), "input_bytes": 1, "finished_at": written} for n in names[:3]]
    _stats(out, rows, name="run-0-part-00000.parquet", schema=legacy)  # listed first: its schema lacks the column
    _stats(out, [_ok_row(src, out, "new-row.png", finished_at=now)], name="run-1-part-00000.parquet")
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
    assert sorted(r["input_uri"].rsplit("/", 1)[1] for r in plan.todo) == ["resized.png", "touched.png"]
    assert plan.skipped == 2


def test_manifest_entries_carry_versions(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "bad.png", "fixed.png", "gone.png", "never.png")
    rows = [
        {"input_uri": str(src / n), "status": "failed", "error": "decode: truncated", "model": "m", "run_id": "old"}
        | {"input_bytes": 1, "input_version": _version(src / n)}
        for n in ("bad.png", "fixed.png", "gone.png")
    ]
    _stats(out, rows)
    (src / "fixed.png").write_bytes(b"z")  # fixed, same size: a manifest run must see it changed
    (src / "gone.png").unlink()
    (src / "never.png").unlink()
    manifest = tmp_path / "list.txt"
    manifest.write_text("".join(f"{src / n}\n" for n in ("bad.png", "fixed.png", "gone.png", "never.png")))
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE, manifest=str(manifest))
    todo = {r["input_uri"].rsplit("/", 1)[1]: r for r in plan.todo}
    assert sorted(todo) == ["fixed.png", "never.png"]  # never tried and missing: planned, it fails with a reason
    assert (plan.still_bad, plan.vanished, plan.changed) == (1, 1, 1)
    assert todo["fixed.png"]["size"] == 1 and todo["fixed.png"]["version"] == _version(src / "fixed.png")


def test_stores_without_versions_compare_content_hashes():
    """A store that gives neither ETag nor modification time (fsspec's memory filesystem): the content's
    sha256 stands in for the version."""
    import fsspec

    from pipeline.storage import content_version

    fs = fsspec.filesystem("memory")
    for n in ("same.png", "edited.png"):
        fs.pipe(f"/in-{id(fs)}/{n}", b"old")
    src, out = f"memory:///in-{id(fs)}", f"memory:///out-{id(fs)}"
    assert next(list_objects(src)).version == ""
    for n in ("same.png", "edited.png"):
        fs.pipe(f"/out-{id(fs)}/images/{n}", b"png")
    rows = [
        {
            "input_uri": f"{src}/{n}",
            "output_uri": f"{out}/images/{n}",
            "status": "ok",
            "model": "m",
            "input_version": content_version(b"old"),
        }
        for n in ("same.png", "edited.png")
    ]
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in STATS_SCHEMA.names} for r in rows], STATS_SCHEMA), buf)
    fs.pipe(f"/out-{id(fs)}/stats/run-a-part-00000.parquet", buf.getvalue().to_pybytes())
    fs.pipe(f"/in-{id(fs)}/edited.png", b"new")
    plan = make_plan(input_uri=src, output_uri=out, model="m", storage=NONE)
    assert [r["input_uri"] for r in plan.todo] == [f"{src}/edited.png"] and plan.skipped == 1
    assert plan.todo[0]["version"] == ""  # the read stage records the hash of what it reads


def test_output_names_take_the_format_extension(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "a.jpeg", "b.png", "sub/c.TIF", "d.bmp", "e.webp")

    def names(fmt):
        plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE, output_format=fmt)
        return {r["input_uri"].rsplit("/in/", 1)[1]: r["output_uri"].rsplit("/images/", 1)[1] for r in plan.todo}

    assert names("webp") == {
        "a.jpeg": "a.webp",
        "b.png": "b.webp",
        "sub/c.TIF": "sub/c.webp",
        "d.bmp": "d.webp",
        "e.webp": "e.webp",
    }
    assert names("tiff")["sub/c.TIF"] == "sub/c.tif" and names("jpeg")["b.png"] == "b.jpg"
    # same: the input's format by its extension; formats that are not written (BMP) become PNG.
    assert names("same") == {
        "a.jpeg": "a.jpg",
        "b.png": "b.png",
        "sub/c.TIF": "sub/c.tif",
        "d.bmp": "d.png",
        "e.webp": "e.webp",
    }


def test_a_change_of_format_is_a_change_of_output(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _touch(src, "a.jpg", "b.png")
    _touch(out / "images", "a.png", "b.png")
    _stats(
        out,
        [
            {
                "input_uri": str(src / n),
                "output_uri": str(out / "images" / (n[0] + ".png")),
                "status": "ok",
                "model": "m",
                "run_id": "old",
                "input_version": _version(src / n),
            }
            for n in ("a.jpg", "b.png")
        ],
    )

    def plan(fmt):
        return make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE, output_format=fmt)

    assert (plan("png").skipped, plan("png").todo, plan("png").reformatted) == (2, [], 0)
    webp = plan("webp")
    assert webp.skipped == 0 and webp.reformatted == 2 and webp.changed == 0
    assert sorted(r["output_uri"].rsplit("/", 1)[1] for r in webp.todo) == ["a.webp", "b.webp"]
    same = plan("same")  # b.png is already PNG; a.jpg goes to JPEG now
    assert same.skipped == 1 and [r["output_uri"].rsplit("/", 1)[1] for r in same.todo] == ["a.jpg"]


def test_a_plan_without_shuffle_is_the_shuffled_plan(tmp_path, monkeypatch, parts):
    """Parts written for this prefix are planned by the listing tasks alone: with folders that sort
    between each other's keys (``f1``, ``f1-x``, ``f10``), nested folders, a collision with an earlier
    claim, outputs gone missing, another model's rows, and inputs and whole folders that vanished."""
    import pipeline.planning.plan
    from pipeline.stats import stats_index

    src, out = tmp_path / "in", tmp_path / "out"
    done = ["f1/a.jpg", "f1/sub/b.png", "f1-x/g.png", "f10/e.png", "top.png", "gone/x.png", "f1/d.png", "f2/c.png"]
    _touch(src, *done)
    _touch(out / "images", *[n.rsplit(".", 1)[0] + ".png" for n in done if n != "f2/c.png"])  # c's output lost
    rows = [_ok_row(src, out, n, output_uri=str(out / "images" / (n.rsplit(".", 1)[0] + ".png"))) for n in done]
    rows[3]["model"] = "other"  # f10/e.png: done by another model only
    _stats(out, rows[:4], name="run-a-part-00000.parquet")
    _stats(out, rows[4:], name="run-a-part-00001.parquet")
    for n in ("gone/x.png", "f1/d.png"):
        (src / n).unlink()
    (src / "gone").rmdir()
    _touch(src, "f1/a.png", "f1-x/new.png")  # a.png wants a.jpg's name; a new upload beside the others

    def plan(colocated: bool):
        monkeypatch.setattr(pipeline.planning.plan, "COLOCATED", colocated)
        p = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE)
        rel = {r["input_uri"].rsplit("/in/", 1)[1]: r["output_uri"].rsplit("/images/", 1)[1] for r in p.todo}
        return rel, (p.listed, p.skipped, p.vanished, p.changed, p.still_bad, p.planned)

    stats = [str(p) for p in sorted((out / "stats").iterdir())]
    assert (stats_index(stats, input_uri=str(src), storage=NONE) is not None) == (parts == "sorted")
    expected = {n: n for n in ("f1-x/new.png", "f10/e.png", "f2/c.png")} | {"f1/a.png": "f1/a.png.png"}
    assert plan(colocated=True) == plan(colocated=False) == (expected, (8, 4, 2, 0, 0, 4))
