"""decode_image on a real photo and on variants of it generated here with Pillow/OpenCV."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from faces import decode
from faces.decode import ImageInfo, decode_image, probe_image, read_image_size
from service.errors import DomainError, ImageTooLarge, InvalidImage, UnsupportedFormat

DATA = Path(__file__).parent / "data"
PHOTO = DATA / "img12.jpg"  # deepface sample: 560x415 RGB JPEG
GRAY_PHOTO = DATA / "penny1.png"  # bbt crop: 150x150 grayscale (mode L) PNG
CAP = 50_000_000


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return PHOTO.read_bytes()


@pytest.fixture(scope="module")
def photo_rgb(photo_bytes: bytes) -> np.ndarray:
    # Reference decode straight from Pillow, independent of the code under test.
    with Image.open(io.BytesIO(photo_bytes)) as img:
        return np.array(img.convert("RGB"))


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_declaring_size(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose IHDR is patched to claim width x height (CRC fixed so Pillow accepts it)."""
    data = bytearray(encode(Image.new("L", (8, 8), 128), "PNG"))
    # signature (8) | length (4) | b"IHDR" (4) | width (4) | height (4) | 5 more bytes | CRC (4)
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- happy paths ------------------------------------------------------------------------------------------


def test_jpeg_decodes_to_contiguous_rgb_uint8(photo_bytes: bytes, photo_rgb: np.ndarray) -> None:
    out = decode_image(photo_bytes, max_pixels=CAP)
    assert out.shape == (415, 560, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, photo_rgb)


def test_grayscale_png_becomes_three_equal_channels() -> None:
    data = GRAY_PHOTO.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L"
        gray = np.array(img)
    out = decode_image(data, max_pixels=CAP)
    assert out.shape == (150, 150, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_rgb_png_round_trips_exactly(photo_rgb: np.ndarray) -> None:
    data = encode(Image.fromarray(photo_rgb), "PNG")
    np.testing.assert_array_equal(decode_image(data, max_pixels=CAP), photo_rgb)


def test_lossless_webp_round_trips_exactly(photo_rgb: np.ndarray) -> None:
    data = encode(Image.fromarray(photo_rgb), "WEBP", lossless=True)
    np.testing.assert_array_equal(decode_image(data, max_pixels=CAP), photo_rgb)


def test_lossy_webp_is_close(photo_rgb: np.ndarray) -> None:
    data = encode(Image.fromarray(photo_rgb), "WEBP", quality=90)
    out = decode_image(data, max_pixels=CAP)
    assert out.shape == photo_rgb.shape
    assert mean_abs_diff(out, photo_rgb) < 4


def _alpha_ramp(height: int, width: int) -> np.ndarray:
    """Left third opaque, middle third half transparent, right third fully transparent."""
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[:, width // 3 : 2 * width // 3] = 128
    alpha[:, 2 * width // 3 :] = 0
    return alpha


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255
    return np.rint(rgb * a + 255 * (1 - a)).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_rgba_is_composited_over_white(photo_rgb: np.ndarray, fmt: str) -> None:
    h, w, _ = photo_rgb.shape
    alpha = _alpha_ramp(h, w)
    colours = photo_rgb.copy()
    colours[alpha == 0] = (0, 0, 0)  # what encoders typically leave under full transparency
    params = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    data = encode(Image.fromarray(np.dstack([colours, alpha])), fmt, **params)

    out = decode_image(data, max_pixels=CAP)
    assert out.shape == (h, w, 3)
    np.testing.assert_array_equal(out[:, : w // 3], photo_rgb[:, : w // 3])
    assert (out[:, 2 * w // 3 :] == 255).all()  # transparent → white, not the hidden black
    assert np.abs(out.astype(int) - _over_white(colours, alpha).astype(int)).max() <= 1


def test_la_is_composited_over_white() -> None:
    with Image.open(GRAY_PHOTO) as img:
        gray = np.array(img)
    alpha = _alpha_ramp(*gray.shape)
    out = decode_image(encode(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG"), max_pixels=CAP)
    expected = _over_white(np.repeat(gray[..., None], 3, axis=2), alpha)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_palette_png_without_transparency(photo_rgb: np.ndarray) -> None:
    pal = Image.fromarray(photo_rgb).quantize(colors=64)
    expected = np.array(pal.convert("RGB"))
    out = decode_image(encode(pal, "PNG"), max_pixels=CAP)
    np.testing.assert_array_equal(out, expected)
    assert mean_abs_diff(out, photo_rgb) < 10  # still the photo


def test_palette_png_transparent_index_becomes_white(photo_rgb: np.ndarray) -> None:
    pal = Image.fromarray(photo_rgb).quantize(colors=64)
    indices = np.array(pal)
    transparent_index = int(np.bincount(indices.ravel()).argmax())  # the most common colour
    data = encode(pal, "PNG", transparency=transparent_index)

    out = decode_image(data, max_pixels=CAP)
    opaque_rgb = np.array(pal.convert("RGB"))
    hidden = indices == transparent_index
    assert hidden.any()
    assert (out[hidden] == 255).all()
    np.testing.assert_array_equal(out[~hidden], opaque_rgb[~hidden])


def test_one_bit_png() -> None:
    bits = Image.fromarray((np.indices((40, 60)).sum(axis=0) % 2 * 255).astype(np.uint8)).convert("1")
    out = decode_image(encode(bits, "PNG"), max_pixels=CAP)
    assert out.shape == (40, 60, 3)
    assert set(np.unique(out)) == {0, 255}


def test_cmyk_jpeg(photo_rgb: np.ndarray) -> None:
    cmyk = Image.fromarray(photo_rgb).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "CMYK"
    out = decode_image(data, max_pixels=CAP)
    assert out.shape == photo_rgb.shape
    assert mean_abs_diff(out, photo_rgb) < 3


def test_sixteen_bit_grayscale_png_is_scaled_not_clipped() -> None:
    with Image.open(GRAY_PHOTO) as img:
        gray = np.array(img)
    wide = gray.astype(np.uint16) * 257  # 8-bit v → 16-bit v*257 spans the full 0..65535 range
    data = encode(Image.fromarray(wide), "PNG")
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "I;16"
    out = decode_image(data, max_pixels=CAP)
    # Clipping would turn every pixel >= 1/257 of full scale into 255.
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_sixteen_bit_colour_png(photo_rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert ok
    out = decode_image(buf.tobytes(), max_pixels=CAP)
    np.testing.assert_array_equal(out, photo_rgb)


def test_32_bit_integer_mode_is_scaled_from_16_bit_range() -> None:
    # Older Pillow opened 16-bit grayscale PNGs as mode "I"; the conversion must handle it the same way.
    img = Image.fromarray(np.array([[0, 100 * 257, 65535, 70000, -5]], dtype=np.int32))
    assert img.mode == "I"
    out = decode._to_rgb_array(img)
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 255, 0])


# Orientation tag → the transpose whose result that tag undoes (EXIF spec: 6 means "rotate 90° clockwise to
# display", so the stored pixels are the upright photo turned 90° counter-clockwise, i.e. Pillow's ROTATE_90).
EXIF_CASES = [
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
    (3, Image.Transpose.ROTATE_180),
    (4, Image.Transpose.FLIP_TOP_BOTTOM),
    (5, Image.Transpose.TRANSPOSE),
    (6, Image.Transpose.ROTATE_90),
    (7, Image.Transpose.TRANSVERSE),
    (8, Image.Transpose.ROTATE_270),
]


@pytest.mark.parametrize(("orientation", "stored_as"), EXIF_CASES)
def test_exif_orientation_is_applied(
    photo_rgb: np.ndarray, orientation: int, stored_as: Image.Transpose
) -> None:
    turned = Image.fromarray(photo_rgb).transpose(stored_as)
    exif = Image.Exif()
    exif[0x0112] = orientation
    with_tag = encode(turned, "JPEG", quality=95, exif=exif)
    without_tag = encode(turned, "JPEG", quality=95)

    out = decode_image(with_tag, max_pixels=CAP)
    assert out.shape == photo_rgb.shape
    assert mean_abs_diff(out, photo_rgb) < 3
    # Sanity: the stored pixels really are turned, so the test above is not vacuous.
    plain = decode_image(without_tag, max_pixels=CAP)
    assert plain.shape != photo_rgb.shape or mean_abs_diff(plain, photo_rgb) > 20


def test_mpo_is_accepted_as_jpeg(photo_rgb: np.ndarray) -> None:
    first = Image.fromarray(photo_rgb)
    data = encode(first, "MPO", save_all=True, append_images=[first.rotate(90)], quality=95)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "MPO"
    assert probe_image(data).format == "JPEG"
    out = decode_image(data, max_pixels=CAP)
    assert mean_abs_diff(out, photo_rgb) < 3


# --- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "PPM", "ICO"])
def test_well_formed_but_unsupported_formats(photo_rgb: np.ndarray, fmt: str) -> None:
    data = encode(Image.fromarray(photo_rgb[:64, :64]), fmt)
    with pytest.raises(UnsupportedFormat) as exc:
        decode_image(data, max_pixels=CAP)
    assert exc.value.code == "unsupported_format"
    with pytest.raises(UnsupportedFormat):
        probe_image(data)


def test_text_file_named_jpg_is_invalid(tmp_path: Path) -> None:
    fake = tmp_path / "portrait.jpg"
    fake.write_text("this is not a photo\n" * 20)
    with pytest.raises(InvalidImage) as exc:
        decode_image(fake.read_bytes(), max_pixels=CAP)
    assert exc.value.code == "invalid_image"


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", np.random.default_rng(0).bytes(4096)],
    ids=["empty", "jpeg-soi-only", "png-signature-only", "random"],
)
def test_garbage_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(data, max_pixels=CAP)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9, 0.999, "drop-eoi"])
def test_truncated_jpeg_is_refused(photo_rgb: np.ndarray, progressive: bool, keep: float | str) -> None:
    data = encode(Image.fromarray(photo_rgb), "JPEG", quality=90, progressive=progressive)
    assert data.endswith(b"\xff\xd9")
    cut = data[:-2] if keep == "drop-eoi" else data[: int(len(data) * float(keep))]
    with pytest.raises(InvalidImage):
        decode_image(cut, max_pixels=CAP)


def test_real_jpeg_cut_in_half_is_refused(photo_bytes: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(photo_bytes[: len(photo_bytes) // 2], max_pixels=CAP)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_truncated_png_and_webp_are_refused(photo_rgb: np.ndarray, fmt: str) -> None:
    data = encode(Image.fromarray(photo_rgb), fmt)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], max_pixels=CAP)


def test_refuses_to_run_with_truncated_loading_enabled(
    photo_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError):
        decode_image(photo_bytes, max_pixels=CAP)


# --- pixel cap --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_pixels", [CAP, 10**12])
def test_header_claiming_20000x20000_is_too_large(max_pixels: int) -> None:
    # Above twice Pillow's own limit: Pillow raises DecompressionBombError inside open(), which must come
    # out as ImageTooLarge even when our cap would allow it.
    data = png_declaring_size(20000, 20000)
    assert len(data) < 200
    with pytest.raises(ImageTooLarge) as exc:
        decode_image(data, max_pixels=max_pixels)
    assert exc.value.code == "image_too_large"


def test_pillow_bomb_warning_becomes_too_large() -> None:
    data = png_declaring_size(10000, 10000)  # above Image.MAX_IMAGE_PIXELS, below twice it
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 10000 * 10000
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=10**12)


def test_cap_is_enforced_from_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    original_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    # 3000x3000 is within Pillow's limit, so only our check can stop it; its pixel data is really 8x8, so
    # decoding it would fail as InvalidImage rather than ImageTooLarge.
    data = png_declaring_size(3000, 3000)
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=1_000_000)
    assert loads == []
    assert read_image_size(data) == (3000, 3000)


def test_cap_boundary(photo_bytes: bytes) -> None:
    pixels = 560 * 415
    assert decode_image(photo_bytes, max_pixels=pixels).shape == (415, 560, 3)
    with pytest.raises(ImageTooLarge):
        decode_image(photo_bytes, max_pixels=pixels - 1)


def test_non_positive_cap_is_a_programming_error(photo_bytes: bytes) -> None:
    with pytest.raises(ValueError):
        decode_image(photo_bytes, max_pixels=0)


# --- probing and messages ---------------------------------------------------------------------------------


def test_probe_reads_header(photo_bytes: bytes, photo_rgb: np.ndarray) -> None:
    assert probe_image(photo_bytes) == ImageInfo(format="JPEG", width=560, height=415)
    assert read_image_size(photo_bytes) == (560, 415)
    assert probe_image(GRAY_PHOTO.read_bytes()).format == "PNG"
    assert probe_image(encode(Image.fromarray(photo_rgb), "WEBP")).format == "WEBP"
    with pytest.raises(InvalidImage):
        read_image_size(b"")


# Fragments of Pillow's own messages and of paths/reprs that must never reach a client.
LIBRARY_TEXT = ("PIL", "Pillow", "truncated (", "BytesIO", "cannot identify", "bytes not processed", "/")


def test_error_messages_are_for_clients(photo_bytes: bytes) -> None:
    cases = [
        b"",
        b"GIF89a not really",
        photo_bytes[:5000],
        encode(Image.new("RGB", (4, 4)), "GIF"),
        png_declaring_size(20000, 20000),
        png_declaring_size(3000, 3000),
    ]
    for data in cases:
        with pytest.raises(DomainError) as exc:
            decode_image(data, max_pixels=1_000_000)
        message = exc.value.message
        assert message == str(exc.value)
        for leak in LIBRARY_TEXT:
            assert leak not in message, (leak, message)
