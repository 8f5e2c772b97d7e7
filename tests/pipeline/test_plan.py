"""Planning: output names, unsafe keys, collisions, and the incremental skip."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.plan import make_plan, relative_key, safe_relative
from pipeline.rows import STATS_SCHEMA
from pipeline.storage import StorageOptions

NONE = StorageOptions()


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


def _stats(out, rows):
    (out / "stats").mkdir(parents=True, exist_ok=True)
    full = [{k: r.get(k) for k in STATS_SCHEMA.names} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=STATS_SCHEMA), out / "stats" / "run-old-part-00000.parquet")


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
        return {"input_uri": str(src / name), "output_uri": out_uri, "status": "ok", "model": model, "run_id": "old"}

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
            "input_bytes": size,
            "run_id": "old",
        }
        for n, size in (("bad.png", 1), ("changed.png", 99))
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
