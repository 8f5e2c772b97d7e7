"""The output format table (pipeline/stages/formats.py) is what the encoder, the metadata and the spec read:
every row has an encoder whose files read back as the row says."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.stages.encode import ENCODERS, EncodeOptions, Tags, check_fits, encode_image
from pipeline.stages.formats import OUTPUT_FORMATS, format_of, open_image, output_format
from pipeline.stages.metadata import Metadata, tags_for


@pytest.mark.parametrize("row", OUTPUT_FORMATS.values(), ids=lambda r: r.name)
def test_each_row_encodes_what_it_holds_and_refuses_the_rest(row):
    assert set(ENCODERS) == set(OUTPUT_FORMATS)
    for depth, dtype in ((8, np.uint8), (16, np.uint16)):
        for channels in (1, 2, 3, 4):
            pixels = (np.arange(16 * 16 * channels).reshape(16, 16, channels) % 200).astype(dtype)
            fits = depth in row.bit_depths and (row.alpha or channels in (1, 3))
            if not fits:
                with pytest.raises(ValueError, match=rf"output\.format {row.name}"):
                    check_fits(pixels, row.name)
                continue
            img = open_image(encode_image(pixels, row.name, EncodeOptions(), Tags(srgb=True)))
            assert output_format(img.format) is row
            assert img.size == (16, 16)
    for ext in row.extensions:
        assert format_of(f"a/b{ext.upper()}") == row.name


def test_metadata_goes_where_the_row_says():
    meta = Metadata(exif=b"Exif\0\0II*\0", xmp=b"", iptc=b"\x1c\x02\x00\x00\x02\x00\x04", text={"Comment": "hi"})
    for row in OUTPUT_FORMATS.values():
        tags, kept, problems = tags_for(meta, row.name, channels=3, record={"model": "m"})
        assert ("iptc" in kept) == ("iptc" in row.carries), row.name
        assert ("comment" in kept) == ("comment" in row.carries), row.name
        assert any("iptc: dropped" in p for p in problems) != ("iptc" in row.carries), row.name
        assert bool(tags.text) == (row.provenance == "text"), row.name
