"""tamperscope.io: safe reading of odd/broken images and masks, atomic writes."""
import io as _io
import os
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from tamperscope.errors import ImageReadError, UserError
from tamperscope.io import (atomic_write_bytes, atomic_write_text, mask_is_binary, probe_image, read_image,
                            read_image_bytes, read_mask, read_probability_map, write_png)


def _err(path, **kw) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and os.fspath(path) in msg
    return msg


def _gradient(h=48, w=64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=2).astype(np.uint8)


# ----------------------------------------------------------------------------- real odd files (exif_samples)


def test_orientation_samples_all_upright(shared_data):
    folder = shared_data / "authentic/exif_samples/jpg/orientation"
    for kind, size in (("landscape", (450, 600)), ("portrait", (600, 450))):
        ref = read_image(folder / f"{kind}_1.jpg").astype(np.float32)
        for k in range(1, 9):
            img = read_image(folder / f"{kind}_{k}.jpg")
            assert img.shape == (*size, 3) and img.dtype == np.uint8, (kind, k)
            # same picture the same way up (the files differ only by re-encoding and the EXIF tag)
            assert np.abs(img.astype(np.float32) - ref).mean() < 25, (kind, k)
            flipped = np.abs(img[:, ::-1].astype(np.float32) - ref).mean()
            assert flipped > np.abs(img.astype(np.float32) - ref).mean() + 10
        raw = read_image(folder / f"{kind}_6.jpg", apply_exif=False)
        assert raw.shape == (size[1], size[0], 3)
        assert probe_image(folder / f"{kind}_6.jpg").oriented_hw == size


def test_odd_exif_files_load(shared_data):
    """tests/ and invalid/ hold valid JPEGs with malformed or unusual EXIF: all must decode."""
    root = shared_data / "authentic/exif_samples/jpg"
    files = sorted((root / "invalid").glob("*.jpg")) + sorted((root / "tests").glob("*.jp*g"))
    assert len(files) >= 19
    for f in files:
        img = read_image(f)
        header = probe_image(f)
        assert img.shape == (*header.oriented_hw, 3), f.name
        # OpenCV's decoder (which also applies the EXIF orientation) sees the same picture
        ref = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        assert ref.shape == img.shape and np.abs(ref.astype(np.int16) - img).mean() < 2, f.name


def test_corrupted_sample_rejected(shared_data):
    """corrupted.jpg has 16 KiB of 0xFF inside its scan: PIL decodes it silently into a grey-tailed image."""
    msg = _err(shared_data / "authentic/exif_samples/jpg/corrupted.jpg")
    assert "corrupt JPEG data" in msg and "0x9F" in msg


def test_readme_is_not_an_image(shared_data):
    assert "text file" in _err(shared_data / "authentic/exif_samples/jpg/orientation/README")


# ----------------------------------------------------------------------------- synthesized modes


def test_rgba_palette_grey_bilevel(tmp_path):
    rgb = _gradient()
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])  # fully transparent: alpha must be dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)

    pal = Image.fromarray(rgb).quantize(16)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    expected = np.array(pal.convert("RGB"))
    assert np.array_equal(read_image(tmp_path / "pal.png"), expected)

    grey = rgb[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (*grey.shape, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))

    Image.fromarray(np.dstack([grey, grey]), "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png")[..., 1], grey)

    Image.fromarray(grey > 128).save(tmp_path / "bits.png")
    assert set(np.unique(read_image(tmp_path / "bits.png"))) == {0, 255}


def test_16bit_scaled_by_bit_depth(tmp_path):
    grey16 = np.array([[0, 257, 32896, 65535]], np.uint16).repeat(4, axis=0)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [0, 1, 128, 255]  # scaled, not clipped

    rgb16 = np.zeros((4, 4, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 2] = 65535, 32896  # R full, B half
    cv2.imwrite(str(tmp_path / "c16.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "c16.png")
    assert out[0, 0].tolist() == [255, 0, 128]

    f = np.array([[0.0, 0.5, 1.0]], np.float32).repeat(2, axis=0)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (32, 24), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == (24, 32, 3)
    r, g, b = out.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40


def test_broken_and_valid_exif_orientation(tmp_path):
    img = _gradient()
    Image.fromarray(img).save(tmp_path / "badexif.jpg", quality=95, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7fjunk")
    out = read_image(tmp_path / "badexif.jpg")
    assert out.shape == img.shape  # unreadable EXIF: no rotation, no crash

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    Image.fromarray(img).save(tmp_path / "rot6.jpg", quality=95, exif=exif)
    out = read_image(tmp_path / "rot6.jpg")
    assert out.shape == (img.shape[1], img.shape[0], 3)
    assert np.abs(out.astype(int) - np.rot90(img, -1).astype(int)).mean() < 4


# ----------------------------------------------------------------------------- broken input


def test_broken_files(tmp_path):
    buf = _io.BytesIO()
    Image.fromarray(_gradient(128, 128)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    assert "truncated" in _err(tmp_path / "half.jpg")

    buf = _io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    (tmp_path / "half.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "truncated" in _err(tmp_path / "half.png") or "corrupt" in _err(tmp_path / "half.png")

    (tmp_path / "notes.png").write_text("these are my notes, not a picture\n")
    assert "text file" in _err(tmp_path / "notes.png")
    (tmp_path / "noise.png").write_bytes(bytes(range(256)) * 4)
    assert "not a recognised image format" in _err(tmp_path / "noise.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty file" in _err(tmp_path / "empty.jpg")
    (tmp_path / "folder.png").mkdir()
    assert "directory" in _err(tmp_path / "folder.png")
    assert "not found" in _err(tmp_path / "missing.png")


def test_cut_jpeg_with_restart_markers(tmp_path):
    """A JPEG cut and re-terminated with an end marker decodes silently in PIL; the restart count catches it."""
    ok, enc = cv2.imencode(".jpg", _gradient(96, 128), [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    data = enc.tobytes()
    assert read_image_bytes(data).shape == (96, 128, 3)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    assert "premature end" in _err(tmp_path / "cut.jpg")


def test_pixel_limit_checked_from_header(tmp_path):
    Image.fromarray(_gradient(100, 100)).save(tmp_path / "img.png")
    msg = _err(tmp_path / "img.png", max_pixels=5000)
    assert "too large" in msg and "100×100" in msg
    assert read_image(tmp_path / "img.png", max_pixels=10_000).shape == (100, 100, 3)
    # a PNG header claiming 100000×100000 pixels with no data: rejected before any decoding
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    for side, limit in ((100000, None), (9000, 80_000_000)):  # above PIL's own guard / above ours only
        ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        (tmp_path / "bomb.png").write_bytes(png + chunk(b"IEND", b""))
        assert "too large" in _err(tmp_path / "bomb.png", max_pixels=limit)


def test_read_image_bytes():
    buf = _io.BytesIO()
    Image.fromarray(_gradient()).save(buf, "PNG")
    assert np.array_equal(read_image_bytes(buf.getvalue(), name="photo.png"), _gradient())
    with pytest.raises(ImageReadError, match="^upload: empty file"):
        read_image_bytes(b"")
    with pytest.raises(ImageReadError, match="^cat.gif: "):
        read_image_bytes(b"GIF89a-not-really", name="cat.gif")


# ----------------------------------------------------------------------------- masks


def test_mask_conventions(tmp_path):
    m = np.zeros((16, 20), bool)
    m[4:10, 5:15] = True
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m255.png")
    Image.fromarray(m.astype(np.uint8)).save(tmp_path / "m01.png")  # 0/1 values in an 8-bit file
    cv2.imwrite(str(tmp_path / "m16.png"), m.astype(np.uint16) * 65535)
    cv2.imwrite(str(tmp_path / "m16_01.png"), m.astype(np.uint16))
    Image.fromarray(m).save(tmp_path / "mbits.png")
    rgba = np.dstack([np.repeat(m[..., None].astype(np.uint8) * 255, 3, axis=2), np.full(m.shape, 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "mrgba.png")
    for name in ("m255.png", "m01.png", "m16.png", "m16_01.png", "mbits.png", "mrgba.png"):
        got = read_mask(tmp_path / name)
        assert got.dtype == bool and np.array_equal(got, m), name
        assert mask_is_binary(tmp_path / name), name

    # channel average above half the range: pure red (85) is not tampered, white and yellow (170) are
    col = np.zeros((2, 3, 3), np.uint8)
    col[0, 0] = (255, 0, 0)
    col[0, 1] = (255, 255, 0)
    col[0, 2] = (255, 255, 255)
    Image.fromarray(col).save(tmp_path / "colour.png")
    assert read_mask(tmp_path / "colour.png")[0].tolist() == [False, True, True]

    # JPEG masks are non-binary; they are binarised, and a dark JPEG is never taken as a 0/1 mask
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "mask.jpg", quality=75)
    assert not mask_is_binary(tmp_path / "mask.jpg")
    assert (read_mask(tmp_path / "mask.jpg") != m).mean() < 0.05
    Image.fromarray(m.astype(np.uint8)).save(tmp_path / "dark.jpg", quality=75)
    assert not read_mask(tmp_path / "dark.jpg").any()


def test_mask_size_mismatch_names_both(tmp_path):
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(tmp_path / "gt.png")
    assert read_mask(tmp_path / "gt.png", expected_size=(10, 20)).shape == (10, 20)
    with pytest.raises(ImageReadError, match=r"gt\.png: mask size 10×20 .* image size 20×10"):
        read_mask(tmp_path / "gt.png", expected_size=(20, 10))


def test_mask_is_binary_on_arrays():
    assert mask_is_binary(np.array([[0, 255], [255, 0]], np.uint8))
    assert not mask_is_binary(np.array([[0, 128], [255, 0]], np.uint8))


def test_read_probability_map(tmp_path):
    grey = np.array([[0, 51, 255]], np.uint8)
    write_png(tmp_path / "p.png", grey)
    assert np.allclose(read_probability_map(tmp_path / "p.png"), [[0.0, 0.2, 1.0]])
    cv2.imwrite(str(tmp_path / "p16.png"), np.array([[0, 65535]], np.uint16))
    assert read_probability_map(tmp_path / "p16.png").tolist() == [[0.0, 1.0]]
    assert read_probability_map(tmp_path / "p.png").dtype == np.float32
    with pytest.raises(ImageReadError, match="not found"):
        read_probability_map(tmp_path / "none.png")


# ----------------------------------------------------------------------------- writing


def test_atomic_writes_and_protect(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.txt"]  # no temp files left

    src = tmp_path / "input.png"
    write_png(src, np.zeros((4, 4), np.uint8))
    before = src.read_bytes()
    with pytest.raises(UserError, match="refusing to overwrite"):
        write_png(tmp_path / "." / "input.png", np.ones((4, 4), np.uint8), protect=[src])
    assert src.read_bytes() == before

    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "bad.bin", "not bytes")
    assert not any(p.name.startswith(".bad.bin") for p in tmp_path.iterdir())


def test_write_png_roundtrip(tmp_path):
    rgb = _gradient()
    write_png(tmp_path / "rgb.png", rgb)
    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)
    grey = rgb[..., 1].copy()
    write_png(tmp_path / "grey.png", grey)
    assert np.array_equal(np.array(Image.open(tmp_path / "grey.png")), grey)
    with pytest.raises(UserError, match="uint8"):
        write_png(tmp_path / "f.png", rgb.astype(np.float32))
    with pytest.raises(UserError, match="shape"):
        write_png(tmp_path / "f.png", np.zeros((4, 4, 4), np.uint8))


@pytest.mark.parametrize("fmt,kwargs", [("JPEG", {"exif": b"Exif\x00\x00" + bytes(20), "icc_profile": b"x" * 6000}),
                                        ("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("TIFF", {}), ("BMP", {})])
def test_a_file_cut_after_5000_bytes_says_truncated(tmp_path, fmt, kwargs):
    """Wherever the cut falls (inside a big EXIF/ICC header, or in the pixel data), the message says truncated."""
    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[:5000])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(path)
    assert "corrupt image header" not in str(info.value) and str(path) in str(info.value)


def test_float_images_take_the_smallest_full_scale_that_holds_their_maximum():
    """Float data is read as [0, 1], [0, 255] or [0, 65535] (the smallest range holding the maximum), else scaled
    by the maximum; NaN and infinity are not a maximum."""
    from tamperscope.io import _float_range

    for values, full in (([0.0, 0.5, 1.0], 1.0), ([0.0, 1.5, 255.0], 255.0), ([3.0, 40000.0], 65535.0),
                         ([0.0, 100000.0], 100000.0), ([np.nan, np.inf], 1.0), ([], 1.0)):
        assert _float_range(np.array(values, np.float64)) == full, values
