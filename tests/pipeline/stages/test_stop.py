"""The run's stop flag as the write stage and a stopping driver use it: no image is written after the
driver has taken the rows it holds, and every image written before has its row there."""

from __future__ import annotations

import io

from PIL import Image

from pipeline.rows import OK, STOPPED
from pipeline.stages.stop import close_and_take, start_flag
from tests.images import photo
from tests.pipeline.stages.test_metadata import run_stages


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(24, 32, seed=seed, noise=0.0)).save(buf, "PNG")
    return buf.getvalue()


def test_a_write_under_way_is_waited_for_and_none_starts_after_the_close(ray_local):
    import ray

    flag = start_flag()
    batch = ["s3://b/in/a.png", "s3://b/in/a2.png"]
    assert ray.get(flag.begin.remote(batch))  # a write batch under way when the driver stops
    rows, writing = close_and_take(flag, wait=0.3)
    assert (rows, writing) == ([], 2)  # waited for (0.3 s), then left: its task ends with the driver
    assert not ray.get(flag.begin.remote(["s3://b/in/b.png"]))  # closed: no write starts any more
    ray.get(flag.finish.remote({"s3://b/in/a.png": {"input_uri": "s3://b/in/a.png"}, "s3://b/in/a2.png": None}))
    rows, writing = close_and_take(flag, wait=0.3)
    assert (rows, writing) == ([{"input_uri": "s3://b/in/a.png"}], 0)  # a2 was not written: no row
    ray.kill(flag)


def test_the_write_stage_hands_each_row_to_the_flag_and_writes_nothing_once_it_is_closed(ray_local, tmp_path):
    """One batch of two images: one call to the flag before the batch, one after."""
    import ray

    flag = start_flag()
    stats = run_stages(tmp_path / "open", {"a.png": _png(1), "b.png": _png(2)}, "png", stop=flag)
    assert list(stats["status"]) == [OK, OK]
    ray.get(flag.delivered.remote([stats["input_uri"][0]]))  # the driver has a's row through the pipeline
    rows, writing = close_and_take(flag, wait=1.0)
    assert writing == 0 and [r["input_uri"] for r in rows] == [stats["input_uri"][1]]
    assert rows[0]["output_uri"] == stats["output_uri"][1] and rows[0]["status"] == OK

    stats = run_stages(tmp_path / "closed", {"c.png": _png(3)}, "png", stop=flag)
    assert list(stats["status"]) == [STOPPED] and stats["output_uri"][0] is None
    assert not (tmp_path / "closed" / "out").exists()  # nothing written after the close
    assert close_and_take(flag, wait=0.1) == ([], 0)
    ray.kill(flag)
