"""Safe image and mask reading, and atomic writing (ARCHITECTURE.md "Data"; IMDL-BenCo's GT handling).

Reading
- :func:`read_image` / :func:`read_image_bytes` return ``H×W×3`` uint8 RGB. The EXIF orientation is applied
  (``ImageOps.exif_transpose``); unreadable EXIF falls back to no rotation. Every mode becomes 8-bit RGB:
  grey, bilevel, palette, CMYK and YCbCr through PIL; alpha (LA, PA, RGBA) is dropped, not composited;
  16/32-bit integer images are scaled by their bit depth (TIFF ``BitsPerSample`` when present, else 16 bits,
  or 32 bits when a value exceeds 65535), never clipped (48-bit RGB PNGs: PIL keeps each sample's high byte,
  i.e. value/256); float images are taken as [0, 1] when their maximum is
  at most 1, else as [0, 255] or [0, 65535] (the smallest range holding the maximum), else scaled by the maximum.
- Embedded ICC profiles are not applied: pixel values stay as stored, since that is where forensic traces
  live. Multi-frame files (GIF, multi-page TIFF, MPO) give their first frame.
- The pixel count is checked from the header before any decoding (``max_pixels``), instead of PIL's
  decompression-bomb warning. PIL's own hard limit (2 × ``Image.MAX_IMAGE_PIXELS``) still applies above that.
- JPEG files get a structural check of the compressed data (markers inside the entropy-coded segments and the
  restart-marker count), because libjpeg only *warns* on corrupt data and PIL then silently returns a partly
  grey image. A JPEG whose data was cut and then re-terminated with an end marker is caught only when it uses
  restart markers; without them the decoder gives no signal at all.
- Every failure raises :class:`~tamperscope.errors.ImageReadError` with one line naming the file and the problem.
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched.

Masks (:func:`read_mask`)
- Colour channels are averaged (alpha ignored; palette images go through their palette, as IMDLBenCo's
  ``convert('RGB')`` does) and a pixel is tampered when the average is above half the range: 127.5 for 8-bit,
  32767.5 for 16-bit (the TIFF bit depth when declared), 0.5 for bilevel and [0, 1] float masks.
- 0/1 masks: when an integer mask's maximum is at most 1 it is read as a 0/1 mask and 1 means tampered
  (IMDLBenCo would silently read it as empty). This rule is not applied to JPEG masks, where values of 0–1 are
  compression noise around black.
- Non-binary masks (JPEG masks, anti-aliased edges) are binarised by the same rule; :func:`mask_is_binary`
  tells whether a mask held at most one non-zero value.

Probability maps (:func:`read_probability_map`): saved predictions, 0–255 = probability, as float32 [0, 1].

Writing
- :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`write_png` write a temp file in the target's
  folder and ``os.replace`` it into place. ``protect=[...]`` lists input paths that must never be overwritten.
  A failed write (read-only folder, full disk) raises :class:`UserError` naming the file, and leaves no temp file.
"""
from __future__ import annotations

import io as _io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, UserError

PathLike = Union[str, os.PathLike]

DEFAULT_MAX_PIXELS = 80_000_000
_EXIF_ORIENTATION = 0x0112
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height
_TIFF_BITS_PER_SAMPLE = 258
_RST = np.arange(0xD0, 0xD8, dtype=np.uint8)


# --------------------------------------------------------------------------------------------- decoding


def _read_bytes(path: PathLike) -> tuple[bytes, str]:
    """The file's bytes, or one-line errors for missing, directory, unreadable and empty files."""
    name = os.fspath(path)
    p = Path(path)
    if p.is_dir():
        raise ImageReadError(f"{name}: is a directory, not an image file")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{name}: file not found") from None
    except PermissionError:
        raise ImageReadError(f"{name}: permission denied") from None
    except OSError as exc:
        raise ImageReadError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    return data, name


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 0x20 or b in (0x09, 0x0A, 0x0D) for b in head)


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _signature(head: bytes) -> str | None:
    """The format whose magic number ``head`` starts with (None: none we know)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in _SIGNATURES if head.startswith(magic)), None)


def _cut_short(exc: BaseException, head: bytes, size: int | None) -> bool:
    """Whether a header that failed to parse belongs to a file that ends early (rather than a damaged one)."""
    if isinstance(exc, EOFError) or "truncat" in str(exc).lower() or "end of file" in str(exc).lower():
        return True
    if size is not None and head[:4] == b"RIFF" and len(head) >= 8:  # RIFF (WebP) declares its length
        return size < int.from_bytes(head[4:8], "little") + 8
    return False


def _open(source, head: bytes, name: str, max_pixels: int | None, size: int | None = None) -> Image.Image:
    """Parse the header only (``source``: a binary file object of ``size`` bytes) and enforce the pixel limit
    before decoding. A file cut inside its header is reported as truncated, not as a corrupt header."""
    truncated = f"{name}: truncated image (the file ends early, inside its header)"
    try:
        im = Image.open(source)
    except UnidentifiedImageError as exc:
        fmt = _signature(head)
        if fmt is not None:
            if _cut_short(exc, head, size):
                raise ImageReadError(truncated) from None
            raise ImageReadError(f"{name}: truncated or damaged {fmt} file (its header cannot be read)") from None
        what = "a text file, not an image" if _looks_like_text(head) else "not a recognised image format"
        raise ImageReadError(f"{name}: {what}") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: image too large for PIL's decompression-bomb guard ({exc})") from None
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to open the image") from None
    except Exception as exc:  # PIL raises many types for malformed headers (SyntaxError, struct.error, ...)
        if _cut_short(exc, head, size):
            raise ImageReadError(truncated) from None
        raise ImageReadError(f"{name}: corrupt image header ({_short(exc)})") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageReadError(f"{name}: image has zero size ({w}×{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageReadError(
            f"{name}: image too large ({w}×{h} = {w * h:,} pixels; the limit is {max_pixels:,})")
    return im


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:200]


def _jpeg_problem(data: bytes) -> str | None:
    """Structural check of a JPEG's compressed data; returns a problem description or None.

    Inside entropy-coded data a 0xFF byte must be followed by 0x00 (stuffing), 0xFF (fill), a restart marker
    RST0–7 in cyclic order, or a marker that may legally follow a scan (code ≥ 0xC0, not SOI). For sequential
    frames with a restart interval, fewer restart markers than the MCU count implies (ITU T.81 B.2.4) means the
    data was cut.
    Truncation without an end marker is left to the decoder, which reports it.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    n = buf.size
    ff = np.flatnonzero(buf[:-1] == 0xFF)
    nxt = buf[ff + 1]
    is_marker = (nxt != 0x00) & (nxt != 0xFF) & ((nxt < 0xD0) | (nxt > 0xD7))
    marker_pos = ff[is_marker]
    rst_pos = ff[(nxt >= 0xD0) & (nxt <= 0xD7)]
    restart_interval = 0
    frame: tuple[int, int, int, list[tuple[int, int, int]]] | None = None  # (sof, H, W, [(id, h, v)])
    pos = 2
    while pos + 1 < n:
        if buf[pos] != 0xFF:  # extraneous bytes between segments: libjpeg skips them, and so do we
            k = np.searchsorted(ff, pos)
            if k >= ff.size:
                return None
            pos = int(ff[k])
        while pos + 1 < n and buf[pos + 1] == 0xFF:
            pos += 1
        if pos + 1 >= n:
            return None
        code = int(buf[pos + 1])
        if code == 0xD9:
            return None
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            pos += 2
            continue
        if code < 0xC0 or code == 0xD8:
            return f"invalid marker 0x{code:02X} at byte {pos}"
        if pos + 4 > n:
            return None
        length = (int(buf[pos + 2]) << 8) | int(buf[pos + 3])
        seg = buf[pos + 4:pos + 2 + length]
        if code == 0xDD and seg.size >= 2:
            restart_interval = (int(seg[0]) << 8) | int(seg[1])
        elif code in (0xC0, 0xC1) and seg.size > 5 and seg.size >= 6 + 3 * int(seg[5]):
            comps = [(int(seg[6 + 3 * i]), int(seg[7 + 3 * i]) >> 4, int(seg[7 + 3 * i]) & 15)
                     for i in range(int(seg[5]))]
            frame = (code, (int(seg[1]) << 8) | int(seg[2]), (int(seg[3]) << 8) | int(seg[4]), comps)
        scan_start = pos + 2 + length
        if code != 0xDA:
            pos = scan_start
            continue
        k = np.searchsorted(marker_pos, scan_start)
        if k >= marker_pos.size:
            return None  # data ends inside the scan: the decoder reports the truncation
        end = int(marker_pos[k])
        end_code = int(buf[end + 1])
        if end_code < 0xC0 or end_code == 0xD8:
            return f"invalid marker 0x{end_code:02X} inside the compressed image data at byte {end}"
        lo, hi = np.searchsorted(rst_pos, [scan_start, end])
        rst_codes = buf[rst_pos[lo:hi] + 1]
        if rst_codes.size and not np.array_equal(rst_codes, _RST[np.arange(rst_codes.size) % 8]):
            return "restart markers out of sequence (damaged compressed data)"
        expected = _expected_restarts(frame, restart_interval, seg)
        if expected is not None and rst_codes.size < expected:
            return (f"premature end of compressed data ({rst_codes.size} of {expected} restart markers; "
                    "the file was cut)")
        pos = end
    return None


def _expected_restarts(frame, restart_interval: int, sos: np.ndarray) -> int | None:
    """Restart markers a sequential scan must hold, or None when it cannot be known cheaply."""
    if frame is None or restart_interval == 0 or sos.size < 1:
        return None
    _, height, width, comps = frame
    if height == 0 or not comps:
        return None
    hmax = max(c[1] for c in comps)
    vmax = max(c[2] for c in comps)
    if hmax == 0 or vmax == 0:
        return None
    n_scan = int(sos[0])
    if n_scan == 1:  # non-interleaved: one data unit per MCU
        cid = int(sos[1]) if sos.size > 1 else -1
        comp = next((c for c in comps if c[0] == cid), None)
        if comp is None:
            return None
        cols = _ceil_div(_ceil_div(width * comp[1], hmax), 8)
        rows = _ceil_div(_ceil_div(height * comp[2], vmax), 8)
    elif n_scan == len(comps):
        cols = _ceil_div(width, 8 * hmax)
        rows = _ceil_div(height, 8 * vmax)
    else:
        return None
    return max(0, _ceil_div(cols * rows, restart_interval) - 1)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _decode(im: Image.Image, data: bytes, name: str) -> None:
    """Decode the pixel data in place; map every decoder failure to one readable line."""
    if im.format in ("JPEG", "MPO"):
        problem = _jpeg_problem(data)
        if problem is not None:
            raise ImageReadError(f"{name}: corrupt JPEG data: {problem}")
    try:
        im.load()
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode {im.size[0]}×{im.size[1]} pixels") from None
    except EOFError:
        raise ImageReadError(f"{name}: truncated image data (file ends early)") from None
    except Exception as exc:
        msg = _short(exc)
        if "truncated" in msg.lower() or "end of file" in msg.lower():
            raise ImageReadError(f"{name}: truncated image data (file ends early)") from None
        raise ImageReadError(f"{name}: corrupt image data ({msg})") from None


def _orient(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block means no rotation."""
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:
        return im
    return im if out is None else out


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:
        return 1


def _load(data: bytes, name: str, max_pixels: int | None, apply_exif: bool) -> tuple[Image.Image, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)  # PIL's "possibly corrupt EXIF" and palette notes
        im = _open(_io.BytesIO(data), data[:512], name, max_pixels, len(data))
        fmt = im.format or ""
        _decode(im, data, name)
        if apply_exif:
            im = _orient(im)
    return im, fmt


def _declared_bits(im: Image.Image) -> int | None:
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    try:
        bits = tags.get(_TIFF_BITS_PER_SAMPLE)
        bits = bits[0] if isinstance(bits, (tuple, list)) else bits
        return int(bits) if bits and 1 <= int(bits) <= 32 else None
    except Exception:
        return None


def _integer_range(im: Image.Image, arr: np.ndarray) -> float:
    """Full-scale value of a 16/32-bit integer image (see the module docstring)."""
    bits = _declared_bits(im)
    if bits is None:
        bits = 16 if im.mode.startswith("I;16") or int(arr.max(initial=0)) <= 65535 else 32
    return float(2 ** bits - 1)


def _float_range(arr: np.ndarray) -> float:
    finite = arr[np.isfinite(arr)]
    vmax = float(finite.max()) if finite.size else 0.0
    return next((full for full in (1.0, 255.0, 65535.0) if vmax <= full), vmax)


def _wide_to_uint8(im: Image.Image) -> np.ndarray:
    """I;16*, I and F modes -> H×W uint8, scaled by the bit depth (or float range), never clipped."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        full = _float_range(arr)
    else:
        arr = arr.astype(np.float64)
        full = _integer_range(im, arr)
    return np.rint(np.clip(arr, 0.0, full) * (255.0 / full)).astype(np.uint8)


def _to_rgb8(im: Image.Image, name: str) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        grey = _wide_to_uint8(im)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    try:
        if mode in ("P", "PA"):
            im = im.convert("RGBA")  # keeps palette transparency quiet; alpha is dropped next
        return np.array(im.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as exc:
        raise ImageReadError(f"{name}: unsupported colour mode {mode} ({_short(exc)})") from None


# --------------------------------------------------------------------------------------------- images


def read_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               apply_exif: bool = True) -> np.ndarray:
    """Read any image file as ``H×W×3`` uint8 RGB (EXIF orientation applied), or raise ImageReadError."""
    data, name = _read_bytes(path)
    return read_image_bytes(data, name=name, max_pixels=max_pixels, apply_exif=apply_exif)


def read_image_bytes(data: bytes, name: str = "upload", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     apply_exif: bool = True) -> np.ndarray:
    """:func:`read_image` for in-memory data (web uploads); ``name`` is used in error messages."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UserError(f"{name}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    im, _ = _load(data, name, max_pixels, apply_exif)
    return _to_rgb8(im, name)


def check_image_bytes(data: bytes, name: str = "upload", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The ``(H, W)`` an image's header declares, after the checks :func:`read_image_bytes` makes before decoding
    (format, size, ``max_pixels``): cheap, for refusing an upload before it waits for its turn."""
    data = bytes(data)
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        im = _open(_io.BytesIO(data), data[:512], name, max_pixels, len(data))
        w, h = im.size
        im.close()
    return h, w


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, without decoding: stored size, EXIF orientation and the displayed size."""
    stored_hw: tuple[int, int]
    orientation: int
    format: str
    mode: str

    @property
    def oriented_hw(self) -> tuple[int, int]:
        h, w = self.stored_hw
        return (w, h) if self.orientation in _ROTATING_ORIENTATIONS else (h, w)


_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                   7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def orient_mask(mask: np.ndarray, orientation: int) -> np.ndarray:
    """A bool mask drawn on an image's stored pixel grid, turned like the image's EXIF ``orientation`` turns it
    for display (PIL's ``exif_transpose`` mapping)."""
    if orientation not in _EXIF_TRANSPOSE:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).transpose(_EXIF_TRANSPOSE[orientation])).astype(bool)


def probe_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Header-only look at an image file (cheap size checks over whole datasets)."""
    name = os.fspath(path)
    p = Path(path)
    if p.is_dir():
        raise ImageReadError(f"{name}: is a directory, not an image file")
    if not p.exists():
        raise ImageReadError(f"{name}: file not found")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    with open(p, "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        head = fh.read(512)
        fh.seek(0)
        im = _open(fh, head, name, max_pixels, p.stat().st_size)
        header = ImageHeader(im.size[::-1], _exif_orientation(im), im.format or "", im.mode)
        im.close()
    return header


# --------------------------------------------------------------------------------------------- masks


def _mask_values(path: PathLike, max_pixels: int | None, apply_exif: bool) -> tuple[np.ndarray, float, str]:
    """Channel-averaged mask values (float32 H×W), their full-scale value and the file format."""
    data, name = _read_bytes(path)
    im, fmt = _load(data, name, max_pixels, apply_exif)
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32), 1.0, fmt
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if mode == "F":
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
            return arr.astype(np.float32), _float_range(arr), fmt
        return arr.astype(np.float32), _integer_range(im, arr), fmt
    if mode == "L":
        return np.asarray(im, dtype=np.float32), 255.0, fmt
    if mode in ("LA", "La"):
        return np.asarray(im, dtype=np.float32)[..., 0], 255.0, fmt
    rgb = _to_rgb8(im, name).astype(np.float32)
    return rgb.mean(axis=2), 255.0, fmt


def read_mask(path: PathLike, expected_size: tuple[int, int] | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, apply_exif: bool = True) -> np.ndarray:
    """Read a ground-truth mask of any mode as ``H×W`` bool (tampered = above half the range).

    ``expected_size`` is the image's ``(H, W)``; a different mask size raises ImageReadError naming both.
    """
    values, full, fmt = _mask_values(path, max_pixels, apply_exif)
    if full > 1.0 and fmt != "JPEG" and float(values.max(initial=0.0)) <= 1.0:
        full = 1.0  # a 0/1 mask stored in an 8/16-bit file
    mask = values > (full / 2.0)
    if expected_size is not None and tuple(mask.shape) != tuple(expected_size):
        eh, ew = expected_size
        raise ImageReadError(
            f"{os.fspath(path)}: mask size {mask.shape[0]}×{mask.shape[1]} (H×W) does not match "
            f"the image size {eh}×{ew}")
    return mask


def read_probability_map(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A saved probability map (grey PNG, 0–255 = probability; 16-bit and float files by their range) as
    float32 ``H×W`` in [0, 1]. Colour files are channel-averaged."""
    values, full, _ = _mask_values(path, max_pixels, True)
    return np.clip(values / np.float32(full), 0.0, 1.0).astype(np.float32)


def mask_is_binary(mask: PathLike | np.ndarray) -> bool:
    """True when a mask (a file, or an array of raw values) holds at most one non-zero value.

    JPEG-compressed and anti-aliased masks are not binary; :func:`read_mask` binarises them anyway.
    """
    if isinstance(mask, np.ndarray):
        values = mask.astype(np.float32)
        if values.ndim == 3:
            values = values[..., :3].mean(axis=2)
    else:
        values, _, _ = _mask_values(mask, DEFAULT_MAX_PIXELS, True)
    nonzero = np.unique(values[values != 0])
    return nonzero.size <= 1


# --------------------------------------------------------------------------------------------- writing


def check_protected(path: PathLike, protect: Iterable[PathLike] | None) -> None:
    """Raise :class:`UserError` when ``path`` is (or links to) one of the ``protect`` paths."""
    if not protect:
        return
    target = Path(os.path.realpath(path))
    for item in protect:
        other = Path(os.path.realpath(item))
        same = target == other
        if not same and target.exists() and other.exists():
            same = os.path.samefile(target, other)
        if same:
            raise UserError(f"{os.fspath(path)}: refusing to overwrite an input file")


def atomic_write_bytes(path: PathLike, data: bytes, protect: Iterable[PathLike] | None = None) -> Path:
    """Write ``data`` to a temp file beside ``path`` and rename it into place (never a half-written file)."""
    path = Path(path)
    check_protected(path, protect)
    if path.is_dir():
        raise UserError(f"{os.fspath(path)}: is a directory, cannot write a file there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(write_error(path, exc)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # read-only folder, full disk, quota: one line naming the file
            raise UserError(write_error(path, exc)) from None
        raise
    return path


def write_error(path: PathLike, exc: OSError) -> str:
    """One line for a failed write: ``PATH: cannot write (No space left on device)``."""
    return f"{os.fspath(path)}: cannot write ({exc.strerror or type(exc).__name__})"


def atomic_write_text(path: PathLike, text: str, protect: Iterable[PathLike] | None = None) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), protect=protect)


def write_png(path: PathLike, array: np.ndarray, protect: Iterable[PathLike] | None = None) -> Path:
    """Write a uint8 ``H×W`` (grey) or ``H×W×3`` (RGB) array as PNG, atomically."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise UserError(f"{os.fspath(path)}: write_png needs a uint8 array, got {arr.dtype}")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or arr.size == 0:
        raise UserError(f"{os.fspath(path)}: write_png needs an H×W or H×W×3 array, got shape {arr.shape}")
    return atomic_write_bytes(path, encode_image(arr), protect=protect)


def encode_image(array: np.ndarray, format: str = "PNG", **options) -> bytes:
    """``array`` encoded by PIL as a ``format`` file in memory (``options``: PIL's save options, e.g. quality)."""
    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format=format, **options)
    return buf.getvalue()
