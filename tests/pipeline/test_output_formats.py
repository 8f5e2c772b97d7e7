"""A camera photo through a whole run on S3 (SeaweedFS) and a local Ray: its metadata and provenance in
the output, then a change of output format restoring it again and a re-run skipping it."""

from __future__ import annotations

import io
import uuid

import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipeline.run.job import run_restore
from pipeline.spec import parse_spec
from pipeline.stages.metadata import EXIF_IFD, GPS_IFD, ORIENTATION
from tests.images import photo
from tests.pipeline.stages.test_metadata import TITLE, input_file

pytestmark = pytest.mark.slow


def test_camera_photo_keeps_metadata_and_format_change_is_a_new_output(
    ray_local, s3fs_client, s3_endpoint, tiny_weights
):
    fs, bucket = s3fs_client, f"fmt-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/in/camera.jpg", input_file("JPEG", photo(32, 48, seed=9, noise=0.08)))
    path, widths = tiny_weights

    def spec(**output):
        return parse_spec(
            {
                "model": {"weights": path, **widths},
                "input": {"uri": f"s3://{bucket}/in"},
                "output": {"uri": f"s3://{bucket}/out", "report": False, **output},
                "storage": {"endpoint_url": s3_endpoint},
                "gate": {"enabled": False},
                "resources": {"cpus_per_actor": 1, "batch_size": 1},
                "inference": {"tile": 64, "overlap": 16, "max_pixels": 4096},
            }
        )

    first = run_restore(spec(), run_id="png")
    assert (first.ok, first.failed) == (1, 0)
    img = Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/camera.png")))
    exif = img.getexif()
    assert exif[0x010F] == "Nikon" and exif[ORIENTATION] == 1 and img.size == (32, 48)  # upright
    assert exif.get_ifd(EXIF_IFD)[0x9003] == "1931:07:14 05:42:00" and exif.get_ifd(GPS_IFD)[1] == "N"
    assert img.info["dgunet:model"] == first.model and "@sha256:" in first.model
    assert img.info["dgunet:run_id"] == "png" and img.info["dgunet:source_icc"] == "Archive RGB 1"

    second = run_restore(spec(format="webp", quality=90), run_id="webp")
    assert (second.ok, second.skipped, second.reformatted) == (1, 0, 1)
    webp = Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/camera.webp")))
    assert webp.format == "WEBP" and webp.getexif()[0x0110] == "F3"
    xmp = webp.info["xmp"]
    assert TITLE.encode() in xmp and f"<dgunet:model>{first.model}</dgunet:model>".encode() in xmp

    third = run_restore(spec(format="webp", quality=90), run_id="again")
    assert (third.ok, third.skipped) == (0, 1)

    fs.invalidate_cache()
    files = [p for p in fs.find(f"{bucket}/out/stats") if p.endswith(".parquet")]
    rows = {r["run_id"]: r for r in pads.dataset(files, filesystem=fs, format="parquet").to_table().to_pylist()}
    assert rows["png"]["output_format"] == "png" and rows["webp"]["output_format"] == "webp"
    assert rows["png"]["metadata"] == "exif,xmp,iptc,srgb,text:1,provenance"  # text: the JPEG comment
    assert rows["webp"]["metadata"] == "exif,xmp,srgb,text:1,provenance" and "iptc" in rows["webp"]["metadata_error"]
