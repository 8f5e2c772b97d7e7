"""Metadata carried from input to output, through the decode and write stages, on real encoders.

Inputs are written with Pillow in each format the decoder reads (JPEG, PNG, TIFF, WebP), carrying EXIF
(camera, capture date, GPS, orientation 6), XMP, IPTC where the format has a place for it, text, and an
RGB ICC profile that describes itself as ``Archive RGB 1``; they are decoded, "restored" (the pixels as
decoded), written into each output format, and read back with Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from pipeline.rows import FAILED, OK, RESTORED
from pipeline.stages.decode import decode_batch
from pipeline.stages.encode import EXTENSIONS, EncodeOptions, srgb_profile
from pipeline.stages.iptc import PNG_IPTC_KEY, photoshop_resource, raw_profile
from pipeline.stages.measure import measure_batch
from pipeline.stages.metadata import EXIF_IFD, GPS_IFD, ORIENTATION, XMP_NS, read_provenance, xmp_with
from pipeline.stages.write import write_batch
from pipeline.storage import StorageOptions
from tests.images import photo, png16

MODEL = "dgunet/denoise@sha256:" + "ab" * 32
TITLE = "Harbour at dawn, 1931"
IPTC = b"\x1c\x02\x05\x00" + struct.pack(">H", 0)[1:] + bytes([len(TITLE)]) + TITLE.encode()  # 2:05 Object Name
XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    f'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{TITLE}</dc:title></rdf:Description></rdf:RDF>'
    '</x:xmpmeta><?xpacket end="w"?>'
).encode()
PIXELS = photo(32, 48, seed=5, noise=0.0)  # landscape as stored; orientation 6 shows it as portrait


def _archive_profile() -> bytes:
    """The sRGB profile renamed "Archive RGB 1" (same length as "sRGB built-in"): an RGB profile that is
    not called sRGB, so that its description must be the input's."""
    icc = srgb_profile()
    old, new = "sRGB built-in".encode("utf-16-be"), "Archive RGB 1".encode("utf-16-be")
    assert icc.count(old) == 1
    return icc.replace(old, new)


ICC = _archive_profile()


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[ORIENTATION] = "Nikon", "F3", 6
    exif.get_ifd(EXIF_IFD)[0x9003] = "1931:07:14 05:42:00"  # DateTimeOriginal
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (59.0, 54.0, 36.0), 3: "E", 4: (10.0, 44.0, 24.0)})
    return exif.tobytes()


def _app13(iptc: bytes) -> bytes:
    body = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc + b"\0" * (len(iptc) & 1)
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def input_file(fmt: str, pixels: np.ndarray = PIXELS) -> bytes:
    """``pixels`` saved by Pillow as ``fmt`` with every kind of metadata that format holds."""
    img, buf = Image.fromarray(pixels), io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=95, exif=_exif(), xmp=XMP, icc_profile=ICC, extra=_app13(IPTC), comment="scan 7")
    elif fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Title", TITLE)
        info.add_itxt("Description", "Hafen im Morgengrauen, écrit à la main")
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        info.add_text(PNG_IPTC_KEY, raw_profile("iptc", IPTC), zip=True)
        img.save(buf, "PNG", pnginfo=info, exif=_exif(), icc_profile=ICC)
    elif fmt == "TIFF":
        exif = Image.Exif()  # Pillow takes either tiffinfo or exif, so the XMP and IPTC tags go in the EXIF
        exif.load(_exif())
        exif[700], exif[33723] = XMP, IPTC
        img.save(buf, "TIFF", exif=exif, icc_profile=ICC)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", lossless=True, exif=_exif(), xmp=XMP, icc_profile=ICC)
    return buf.getvalue()


def run_stages(tmp_path, files: dict[str, bytes], fmt: str, **kw) -> dict[str, np.ndarray]:
    """Decode ``files`` and write them (restored = decoded) as ``fmt`` under ``tmp_path``; the stats rows."""
    names = list(files)
    n = len(names)
    batch = {
        "input_uri": np.array([str(tmp_path / "in" / k) for k in names], dtype=object),
        "output_uri": np.array([str(tmp_path / "out" / (k.rsplit(".", 1)[0] + EXTENSIONS[fmt])) for k in names]),
        "size": np.array([len(v) for v in files.values()]),
        "version": np.array(["v1"] * n, dtype=object),
        "reference_uri": np.array([""] * n, dtype=object),
        "status": np.array([OK] * n, dtype=object),
        "error": np.array([""] * n, dtype=object),
        "data": np.array(list(files.values()), dtype=object),
    }
    batch["output_uri"] = batch["output_uri"].astype(object)
    out = measure_batch(decode_batch(batch, max_pixels=10**8))  # as a run chains them
    out.update(restored=out["pixels"], seconds=np.zeros(n), action=np.array([RESTORED] * n, dtype=object))
    return write_batch(out, run_id="run-7", model=MODEL, storage=StorageOptions(), max_pixels=10**8, **kw)


def _xmp_of(img: Image.Image) -> bytes:
    xmp = img.info.get("xmp", b"")
    return xmp.encode() if isinstance(xmp, str) else bytes(xmp)


def _iptc_of(img: Image.Image, data: bytes) -> bytes:
    if img.format == "JPEG":
        return next(photoshop_resource(p[14:], 0x0404) for m, p in img.applist if m == "APP13")
    if img.format == "TIFF":
        return bytes(img.tag_v2[33723])
    text = img.info[PNG_IPTC_KEY].strip().split("\n", 2)
    return bytes.fromhex("".join(text[2].split()))


IN_FORMATS = ["JPEG", "PNG", "TIFF", "WEBP"]
OUT_FORMATS = ["png", "jpeg", "tiff", "webp"]


@pytest.mark.parametrize("out_fmt", OUT_FORMATS)
@pytest.mark.parametrize("in_fmt", IN_FORMATS)
def test_metadata_survives_into_every_format(tmp_path, in_fmt, out_fmt):
    stats = run_stages(tmp_path, {f"photo.{in_fmt.lower()}": input_file(in_fmt)}, out_fmt)
    assert stats["status"][0] == OK, stats["error"][0]
    data = open(stats["output_uri"][0], "rb").read()
    img = Image.open(io.BytesIO(data))
    assert img.format == out_fmt.upper()
    assert stats["output_format"][0] == out_fmt

    # EXIF: camera, capture date and GPS kept; orientation 1 on pixels that are upright.
    exif = img.getexif()
    assert (exif[0x010F], exif[0x0110], exif[ORIENTATION]) == ("Nikon", "F3", 1)
    assert exif.get_ifd(EXIF_IFD)[0x9003] == "1931:07:14 05:42:00"
    gps = exif.get_ifd(GPS_IFD)
    assert gps[1] == "N" and tuple(float(v) for v in gps[2]) == (59.0, 54.0, 36.0)
    pixels = np.asarray(img.convert("RGB"))
    upright = np.rot90(PIXELS, -1)  # orientation 6: turn 90 degrees clockwise to display
    assert pixels.shape == upright.shape
    assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 3

    # Colour: the output is tagged sRGB (a profile, or PNG's sRGB chunk); the input's profile is named.
    if out_fmt == "png":
        assert img.info.get("srgb") == 0 and "icc_profile" not in img.info
        assert img.info["dgunet:source_icc"] == "Archive RGB 1"
    else:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        assert ImageCms.getProfileDescription(profile).strip() == "sRGB built-in"

    # XMP: the input's packet (WebP and JPEG inputs; PNG's iTXt, TIFF's tag 700) and the provenance.
    xmp = _xmp_of(img)
    assert f"<dc:title>{TITLE}</dc:title>".encode() in xmp
    if out_fmt == "png":  # PNG's convention: text chunks
        assert img.info["Software"].startswith("dgunet-restore")
        assert (img.info["dgunet:model"], img.info["dgunet:run_id"]) == (MODEL, "run-7")
    else:
        assert f"<dgunet:model>{MODEL}</dgunet:model>".encode() in xmp
        assert b"<dgunet:run_id>run-7</dgunet:run_id>" in xmp
        assert b"<dgunet:source_icc>Archive RGB 1</dgunet:source_icc>" in xmp
    kept = stats["metadata"][0].split(",")
    assert {"exif", "xmp", "srgb", "provenance"} <= set(kept)

    # IPTC where the input had it (not WebP) and the output has a place for it (not WebP: reported).
    if in_fmt != "WEBP" and out_fmt != "webp":
        assert _iptc_of(img, data) == IPTC and "iptc" in kept
    if in_fmt != "WEBP" and out_fmt == "webp":
        assert "iptc: dropped" in stats["metadata_error"][0]

    # Text chunks: PNG to PNG as chunks, into other formats in the XMP record.
    if in_fmt == "PNG" and out_fmt == "png":
        assert img.text["Title"] == TITLE
        assert img.text["Description"] == "Hafen im Morgengrauen, écrit à la main"
    elif in_fmt == "PNG":
        assert f"<rdf:li>Title: {TITLE}</rdf:li>".encode() in xmp
    if in_fmt == "JPEG" and out_fmt == "jpeg":
        assert img.info["comment"] == b"scan 7" and "comment" in kept


def _ifd1_offset(tiff: bytes) -> int:
    """Where a TIFF structure's IFD1 (an EXIF thumbnail's directory) starts; 0: it has none."""
    e = "<" if tiff[:2] == b"II" else ">"
    ifd0 = struct.unpack(e + "I", tiff[4:8])[0]
    count = struct.unpack(e + "H", tiff[ifd0 : ifd0 + 2])[0]
    return struct.unpack(e + "I", tiff[ifd0 + 2 + 12 * count : ifd0 + 6 + 12 * count])[0]


def test_thumbnail_is_dropped(tmp_path):
    """An EXIF thumbnail (IFD1) shows the unrestored image: it does not reach the output."""
    tiff = bytearray(_exif()[6:])
    e = "<" if tiff[:2] == b"II" else ">"
    ifd0 = struct.unpack(e + "I", tiff[4:8])[0]
    next_at = ifd0 + 2 + 12 * struct.unpack(e + "H", tiff[ifd0 : ifd0 + 2])[0]
    # Chain an IFD1 holding one tag (Compression = 6, JPEG thumbnail) after IFD0.
    tiff[next_at : next_at + 4] = struct.pack(e + "I", len(tiff))
    tiff += struct.pack(e + "H", 1) + struct.pack(e + "HHIHH", 0x0103, 3, 1, 6, 0) + struct.pack(e + "I", 0)
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG", exif=b"Exif\0\0" + bytes(tiff))
    assert _ifd1_offset(Image.open(io.BytesIO(buf.getvalue())).info["exif"][6:])  # the input has IFD1
    stats = run_stages(tmp_path, {"thumb.jpg": buf.getvalue()}, "jpeg")
    out = Image.open(stats["output_uri"][0])
    assert out.getexif()[0x010F] == "Nikon" and _ifd1_offset(out.info["exif"][6:]) == 0


def test_sixteen_bits_keep_depth_and_exif_into_tiff(tmp_path):
    """A 16-bit PNG master (OpenCV's, with an eXIf chunk spliced in after IHDR) into a 16-bit TIFF."""
    import cv2

    rgb16 = photo(20, 30, seed=3).astype(np.uint16) * 257 + 1
    data, exif = png16(rgb16), _exif()[6:]
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif) & 0xFFFFFFFF)
    data = data[:33] + chunk + data[33:]
    stats = run_stages(tmp_path, {"master.png": data}, "tiff")
    assert stats["status"][0] == OK, stats["error"][0]
    out = cv2.imread(stats["output_uri"][0], cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert out.dtype == np.uint16
    assert np.array_equal(out, np.rot90(rgb16, -1))  # exact 16-bit values, upright
    exif_out = Image.open(stats["output_uri"][0]).getexif()
    assert exif_out[0x0110] == "F3" and exif_out[ORIENTATION] == 1
    assert exif_out.get_ifd(EXIF_IFD)[0x9003] == "1931:07:14 05:42:00"


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_sixteen_bit_input_is_refused_into_8bit_formats(tmp_path, fmt):
    stats = run_stages(tmp_path, {"master.png": png16(photo().astype(np.uint16) * 257)}, fmt)
    assert stats["status"][0] == FAILED and stats["output_uri"][0] is None
    assert f"output.format {fmt}" in stats["error"][0] and "16-bit" in stats["error"][0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_alpha_is_refused_into_jpeg_but_kept_in_webp(tmp_path):
    rgba = np.dstack([PIXELS, np.full(PIXELS.shape[:2], 128, np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    stats = run_stages(tmp_path, {"cutout.png": buf.getvalue()}, "jpeg")
    assert stats["status"][0] == FAILED and "alpha" in stats["error"][0] and "output.format jpeg" in stats["error"][0]
    stats = run_stages(tmp_path, {"cutout.png": buf.getvalue()}, "webp")
    assert stats["status"][0] == OK
    assert np.array_equal(np.asarray(Image.open(stats["output_uri"][0])), rgba)  # lossless by default


def test_unreadable_exif_is_reported_not_fatal(tmp_path):
    buf = io.BytesIO()
    bad = b"Exif\0\0MM\0*\0\0\0\x08\xff\xff" + b"\x01" * 20  # IFD0 claims 65535 entries
    Image.fromarray(PIXELS).save(buf, "JPEG", exif=bad, xmp=XMP)
    stats = run_stages(tmp_path, {"broken.jpg": buf.getvalue()}, "png")
    assert stats["status"][0] == OK
    assert "exif" in stats["metadata_error"][0]
    assert "exif" not in stats["metadata"][0].split(",") and "xmp" in stats["metadata"][0].split(",")


def test_metadata_off_keeps_provenance_and_colour_only(tmp_path):
    stats = run_stages(tmp_path, {"photo.jpg": input_file("JPEG")}, "jpeg", keep_metadata=False)
    img = Image.open(stats["output_uri"][0])
    assert not img.getexif() and TITLE.encode() not in _xmp_of(img)
    assert MODEL.encode() in _xmp_of(img) and "icc_profile" in img.info
    assert stats["metadata"][0] == "srgb,provenance"


def test_lossy_settings_change_the_bytes(tmp_path):
    files = {"photo.png": input_file("PNG", photo(64, 64, seed=1, noise=0.1))}
    sizes = {}
    for name, options in {"q95": EncodeOptions(quality=95), "q50": EncodeOptions(quality=50)}.items():
        sizes[name] = int(run_stages(tmp_path / name, files, "jpeg", options=options)["output_bytes"][0])
    assert sizes["q50"] < sizes["q95"]
    lossless = run_stages(tmp_path / "lossless", files, "webp")
    out = np.asarray(Image.open(lossless["output_uri"][0]).convert("RGB"))
    assert np.array_equal(out, np.rot90(photo(64, 64, seed=1, noise=0.1), -1))  # upright, exact


def test_metadata_the_encoder_refuses_is_reported_and_the_image_written(tmp_path):
    """An EXIF block over JPEG's 64 KiB segment fits a PNG input and output, not a JPEG output."""
    exif = Image.Exif()
    exif.load(_exif())
    exif.get_ifd(EXIF_IFD)[0x9286] = b"ASCII\0\0\0" + b"x" * 70_000  # UserComment
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "PNG", exif=exif.tobytes())
    png = run_stages(tmp_path / "png", {"big.png": buf.getvalue()}, "png")
    assert png["status"][0] == OK and "exif" in png["metadata"][0].split(",")
    jpeg = run_stages(tmp_path / "jpeg", {"big.png": buf.getvalue()}, "jpeg")
    assert jpeg["status"][0] == OK and jpeg["metadata"][0] == "srgb"
    assert "metadata: not written, the jpeg encoder refused it" in jpeg["metadata_error"][0]
    img = Image.open(jpeg["output_uri"][0])
    assert not img.getexif() and "icc_profile" in img.info


def test_png_software_chunk_is_kept_beside_ours(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "GIMP 2.10")
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "PNG", pnginfo=info)
    stats = run_stages(tmp_path, {"edited.png": buf.getvalue()}, "png")
    text = Image.open(stats["output_uri"][0]).text
    assert text["Software"].startswith("dgunet-restore") and text["dgunet:source_software"] == "GIMP 2.10"


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_sixteen_bit_pixels_keep_their_own_profile(tmp_path, fmt):
    """The decoder leaves 16-bit pixels in their profile, so the output carries that profile, not sRGB."""
    payload = b"ICC profile\0\0" + zlib.compress(ICC)
    iccp = struct.pack(">I", len(payload)) + b"iCCP" + payload
    iccp += struct.pack(">I", zlib.crc32(b"iCCP" + payload) & 0xFFFFFFFF)
    data = png16(photo(20, 30, seed=4).astype(np.uint16) * 257)
    stats = run_stages(tmp_path, {"master.png": data[:33] + iccp + data[33:]}, fmt)
    assert stats["status"][0] == OK and "icc" in stats["metadata"][0].split(",")
    assert "srgb" not in stats["metadata"][0].split(",")
    icc = Image.open(stats["output_uri"][0]).info["icc_profile"]
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip() == "Archive RGB 1"


FORGED = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    f'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{TITLE}</dc:title>'
    "</rdf:Description>"
    f'<rdf:Description rdf:about="" xmlns:dgunet="{XMP_NS}"><dgunet:model>forged-in</dgunet:model>'
    "<dgunet:input_uri>s3://elsewhere/forged-in.png</dgunet:input_uri></rdf:Description>"
    "</rdf:RDF></x:xmpmeta><dgunet:model>forged-after</dgunet:model>"
    "<dgunet:input_uri>s3://elsewhere/forged-after.png</dgunet:input_uri>"
    '<dgunet:input_version>v1</dgunet:input_version><?xpacket end="w"?>'
).encode()


@pytest.mark.parametrize("out_fmt", ["jpeg", "webp", "tiff", "png"])
def test_an_inputs_xmp_cannot_forge_the_outputs_provenance(tmp_path, out_fmt):
    """An input JPEG whose XMP holds a ``dgunet`` record inside its packet and elements after ``</rdf:RDF>``:
    the output's provenance is ours alone, and none of the forged elements is carried."""
    img, buf = Image.fromarray(PIXELS), io.BytesIO()
    img.save(buf, "JPEG", quality=95, xmp=FORGED)
    stats = run_stages(tmp_path, {"photo.jpg": buf.getvalue()}, out_fmt)
    assert stats["status"][0] == OK, stats["error"][0]
    data = open(stats["output_uri"][0], "rb").read()
    record = read_provenance(data)
    assert (record["model"], record["run_id"]) == (MODEL, "run-7")
    assert record["input_uri"] == str(tmp_path / "in" / "photo.jpg") and record["input_version"] == "v1"
    assert b"forged" not in data and f"<dc:title>{TITLE}</dc:title>".encode() in _xmp_of(Image.open(io.BytesIO(data)))


def test_only_our_own_description_is_read_as_the_record():
    """Elements after ``</rdf:RDF>``, or a description of ours that is not the last one, are not the record."""
    after = XMP.replace(b"</x:xmpmeta>", b"</x:xmpmeta><dgunet:model>forged</dgunet:model>")
    assert read_provenance(_jpeg_with_xmp(after)) == {}
    ours = xmp_with(XMP, {"model": MODEL, "run_id": "r"}, {})
    assert read_provenance(_jpeg_with_xmp(ours)) == {"model": MODEL, "run_id": "r"}
    first = ours.replace(
        b"</rdf:RDF>", b"<rdf:Description rdf:about=''><dc:title>x</dc:title></rdf:Description></rdf:RDF>"
    )
    assert read_provenance(_jpeg_with_xmp(first)) == {}


def _jpeg_with_xmp(xmp: bytes) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG", xmp=xmp)
    return buf.getvalue()
