"""Untrusted image bytes → HxWx3 uint8 RGB array.

Serving and training both decode through :func:`decode_image`, so the pixels a model is trained on and the
pixels it is served are produced by the same rules (EXIF orientation, alpha handling, 16-bit scaling).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

from faces.errors import ImageTooLarge, InvalidImage, UnsupportedFormat

# Pillow format name → the name we report. MPO is a JPEG with extra frames appended (phones and cameras
# write it for depth maps/previews); the first frame is an ordinary JPEG, so it is accepted as JPEG.
_ACCEPTED_FORMATS: dict[str, str] = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

_MSG_INVALID = "The image could not be decoded; it is empty, corrupt or truncated."
_MSG_UNSUPPORTED = "Unsupported image format; send JPEG, PNG or WebP."


def _msg_too_large(max_pixels: int) -> str:
    return f"The image has too many pixels; the limit is {max_pixels}."


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says, before any pixel is decoded."""

    format: str  # "JPEG", "PNG" or "WEBP"
    width: int  # as stored, i.e. before EXIF orientation is applied
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe_image(data: bytes) -> ImageInfo:
    """Read format and size from the header only.

    Raises ``InvalidImage`` for unreadable bytes and ``UnsupportedFormat`` for formats we do not accept.
    """
    with _open(data) as img:
        return ImageInfo(format=_accepted_format(img), width=img.width, height=img.height)


def read_image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` as stored in the header (before EXIF orientation); nothing is decoded."""
    info = probe_image(data)
    return info.width, info.height


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes into a C-contiguous HxWx3 uint8 RGB array.

    Raises ``InvalidImage`` (empty, corrupt, truncated), ``UnsupportedFormat`` (anything but JPEG, PNG,
    WebP) and ``ImageTooLarge`` (more than ``max_pixels`` pixels, judged from the header before decoding).
    """
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    # The flag is process-global in Pillow; with it set, a truncated JPEG or PNG loads "successfully" with
    # grey/black filler where the data ran out. We cannot make it per-call, so refuse loudly rather than
    # mutate a global some other code may rely on.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; decode_image needs strict loading")

    with _open(data) as img:
        _accepted_format(img)
        # Image.open is lazy: only the header has been parsed, so this refuses decompression bombs before
        # a single pixel is decoded.
        if img.width * img.height > max_pixels:
            raise ImageTooLarge(_msg_too_large(max_pixels))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
                # In place: without it Pillow returns a full copy even when there is nothing to rotate.
                ImageOps.exif_transpose(img, in_place=True)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(_msg_too_large(max_pixels)) from exc
        except Exception as exc:
            # Pillow raises a zoo of types for corrupt data (OSError, ValueError, SyntaxError, struct.error,
            # EOFError...); to a client they all mean the same thing. The cause stays chained for our logs.
            raise InvalidImage(_MSG_INVALID) from exc
        # Verified with Pillow 13: with LOAD_TRUNCATED_IMAGES False, JPEGs cut anywhere (baseline,
        # progressive, optimised, with restart markers, or only missing the final EOI marker) fail in
        # load() with OSError, so no extra "must end with FFD9" check is made. Such a check would also
        # refuse valid files that carry data after EOI (Motion Photos append an MP4 there).
        return _to_rgb_array(img)


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImage(_MSG_INVALID)
    try:
        # Pillow checks its own bomb limit (Image.MAX_IMAGE_PIXELS) inside open(): a warning above it, an
        # error above twice it. Both mean "too large" to us.
        # catch_warnings swaps a process-global filter list and is not thread-safe; under concurrency the
        # worst case is a lost or leaked "error" filter for this one warning category, which is harmless
        # because the explicit header check in decode_image is what enforces our limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("The image has too many pixels.") from exc
    except Exception as exc:
        raise InvalidImage(_MSG_INVALID) from exc


def _accepted_format(img: Image.Image) -> str:
    # The format Pillow sniffed from the bytes, never a client-supplied name or content type.
    fmt = _ACCEPTED_FORMATS.get(img.format or "")
    if fmt is None:
        raise UnsupportedFormat(_MSG_UNSUPPORTED)
    return fmt


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES:
        img = Image.fromarray(_sixteen_to_eight(np.asarray(img)))
    if img.mode == "L" and "transparency" not in img.info:
        # Grey straight to an RGB array: through Pillow's RGB (4 bytes a pixel) it would take three times
        # the memory for the same replicated values.
        return cv2.cvtColor(np.asarray(img), cv2.COLOR_GRAY2RGB)
    return _rgb_pixels(_to_rgb(img))


def _rgb_pixels(rgb: Image.Image) -> np.ndarray:
    """A writable HxWx3 copy of an RGB image, copied a band of rows at a time.

    ``np.array(image)`` goes through ``tobytes()``: a full-size bytes object and then a full-size copy of
    it, next to Pillow's own 4-bytes-a-pixel buffer. Bands keep the extra memory to one band.
    """
    width, height = rgb.size
    out = np.empty((height, width, 3), np.uint8)
    step = max(1, _ROWS_PER_BLOCK_PIXELS // max(1, width))
    for top in range(0, height, step):
        bottom = min(height, top + step)
        out[top:bottom] = np.asarray(rgb.crop((0, top, width, bottom)))
    return out


# 16-bit value → 8-bit value, rounded: round(v * 255 / 65535).
_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
_ROWS_PER_BLOCK_PIXELS = 1 << 20


def _sixteen_to_eight(wide: np.ndarray) -> np.ndarray:
    """Rescale 0..65535 to 0..255 through a lookup table, a block of rows at a time.

    Pillow's convert("L") clips 16-bit values at 255, turning almost every pixel white. Arithmetic on the
    whole image would need wide temporaries (int64: 8 bytes a pixel, several of them); the table gives the
    uint8 result directly, and mode "I" (int32, possibly outside 0..65535) is clipped a block at a time.
    """
    out = np.empty(wide.shape[:2], np.uint8)
    step = max(1, _ROWS_PER_BLOCK_PIXELS // max(1, wide.shape[1]))
    for top in range(0, wide.shape[0], step):
        block = wide[top : top + step]
        if block.dtype != np.uint16:
            block = np.clip(block, 0, 65535).astype(np.uint16)
        out[top : top + step] = _SIXTEEN_TO_EIGHT[block]
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded 8-bit mode → 8-bit RGB."""
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        # Fully transparent pixels carry whatever colour the encoder left there (often black or garbage),
        # so dropping alpha would expose it; compositing over white gives a defined, neutral background.
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    # Covers L, 1, P without transparency, CMYK (Pillow undoes Adobe's inverted CMYK JPEGs) and RGB.
    # Embedded ICC profiles are not applied; training decodes through this same function.
    return img if img.mode == "RGB" else img.convert("RGB")
