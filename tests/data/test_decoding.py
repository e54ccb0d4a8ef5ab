"""Decoding of one file: transparency onto a background, the pixel limit, reduced decodes of
large images, EXIF orientation, Pillow's warnings counted not raised, and opaque images
decoded exactly as before these were added."""

import re
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

import selfsup.data.folder as folder_module
from selfsup.config import ConfigError
from selfsup.data import load_splits
from selfsup.data.folder import (
    ImageDecodeError,
    decode_image,
    decode_image_with_warnings,
    describe_warnings,
    iter_folder_batches,
    load_folder,
    parse_background,
)


def black_square_on_transparent(mode):
    """A 40x40 image of ``mode``: a black 20x20 square in the middle, transparent around it."""
    alpha = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(alpha).rectangle((10, 10, 29, 29), fill=255)
    if mode == "RGBA":
        return Image.merge("RGBA", (*Image.new("RGB", (40, 40), 0).split(), alpha)), {}
    if mode == "LA":
        return Image.merge("LA", (Image.new("L", (40, 40), 0), alpha)), {}
    opaque = alpha.point(lambda value: 0 if value else 1)  # 0 where drawn, 1 around it
    if mode == "P-index":  # index 1 is transparent
        image = opaque.convert("P")
        image.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
        return image, {"transparency": 1}
    if mode == "P-bytes":  # one alpha byte per palette entry
        image = opaque.convert("P")
        image.putpalette([0, 0, 0, 90, 90, 90] + [0] * 762)
        return image, {"transparency": bytes([255, 0])}
    if mode == "RGB-colour":  # the colour (90, 90, 90) is transparent
        return Image.fromarray(np.where(np.asarray(opaque)[..., None] == 1, 90, 0).astype(np.uint8).repeat(3, 2)), {
            "transparency": (90, 90, 90)
        }
    if mode == "L-colour":
        return opaque.point(lambda value: 90 * value), {"transparency": 90}
    raise AssertionError(mode)


TRANSPARENT_KINDS = ["RGBA", "LA", "P-index", "P-bytes", "RGB-colour", "L-colour"]


@pytest.mark.parametrize("kind", TRANSPARENT_KINDS)
def test_black_drawing_on_transparency_is_composited_onto_the_background(tmp_path, kind, recwarn):
    image, options = black_square_on_transparent(kind)
    path = tmp_path / f"{kind}.png"
    image.save(path, **options)
    with Image.open(path) as written:
        assert written.has_transparency_data, "the file must really be transparent"

    white = decode_image(path, 3, 8)  # white by default
    assert white[:, 0, 0].tolist() == [255, 255, 255] and white[:, 4, 4].tolist() == [0, 0, 0]
    assert decode_image(path, 1, 8)[:, 0, 0].tolist() == [255]
    black = decode_image(path, 3, 8, background="black")
    assert black.max() == 0  # a black drawing on black: what every background used to give
    coloured = decode_image(path, 3, 8, background="#336699")
    assert coloured[:, 0, 0].tolist() == [0x33, 0x66, 0x99] and coloured[:, 4, 4].tolist() == [0, 0, 0]
    assert len(recwarn) == 0  # the bytes palette converts to RGBA without Pillow's warning


def test_background_values_and_the_error_for_others(tmp_path):
    assert parse_background("white") == (255, 255, 255) and parse_background("black") == (0, 0, 0)
    assert parse_background("#FF8000") == (255, 128, 0)
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    for bad in ("pink", "#12345", "rgb(1,2,3)", ""):
        with pytest.raises(ConfigError, match=re.escape(f"data.background: {bad!r} is not a colour; use 'white'")):
            decode_image(tmp_path / "a.png", 3, 4, background=bad)
    # Checked before anything is decoded, whatever the source.
    with pytest.raises(ConfigError, match="data.background: 'pink'"):
        load_folder(tmp_path, workers=0, background="pink")
    with pytest.raises(ConfigError, match="data.background: 'pink'"):
        load_splits("digits", background="pink")
    with pytest.raises(ConfigError, match="data.max_pixels: must be a positive number of pixels, got 0"):
        load_folder(tmp_path, workers=0, max_pixels=0)


def test_images_above_max_pixels_are_skipped_with_the_reason(tmp_path):
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "large.png")
    Image.new("RGB", (20, 20), (4, 5, 6)).save(tmp_path / "small.png")
    images = load_folder(tmp_path, channels=3, size=8, workers=0, max_pixels=1000)
    assert images.paths == [str(tmp_path / "small.png")]
    [(path, reason)] = images.skipped
    assert path == str(tmp_path / "large.png")
    assert reason == "image is 40 x 30 = 1,200 pixels, more than data.max_pixels=1,000 (a possible decompression bomb)"
    with pytest.raises(ImageDecodeError, match="data.max_pixels=1,000"):
        decode_image(tmp_path / "large.png", 3, 8, max_pixels=1000)


def test_max_pixels_replaces_pillows_limit_without_changing_it(tmp_path, monkeypatch, recwarn):
    Image.new("RGB", (40, 40), (7, 8, 9)).save(tmp_path / "a.png")
    # 1,600 pixels: more than twice this limit, so Pillow alone would refuse the file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)
    assert decode_image(tmp_path / "a.png", 3, 8)[:, 0, 0].tolist() == [7, 8, 9]
    assert Image.MAX_IMAGE_PIXELS == 700  # restored after the decode
    assert len(recwarn) == 0  # no DecompressionBombWarning either


def spy_on_reduction(monkeypatch):
    """Record (size before, size after) of every _reduced call inside decode."""
    calls = []
    reduced = folder_module._reduced

    def spy(image, size):
        result = reduced(image, size)
        calls.append((image.size, result.size))
        return result

    monkeypatch.setattr(folder_module, "_reduced", spy)
    return calls


def test_a_large_image_is_decoded_reduced_upright_and_composited(tmp_path, monkeypatch):
    # 4000 wide, 3000 high (12 Mpx), on its side: EXIF orientation 6 says "rotate 90
    # degrees clockwise to display". Transparent, with black on the left half and a red
    # block top right, so the upright picture is black on top, red bottom right.
    image = Image.new("RGBA", (4000, 3000), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1999, 2999), fill=(0, 0, 0, 255))
    draw.rectangle((2000, 0, 3999, 1499), fill=(255, 0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "large.png", exif=exif, compress_level=1)
    calls = spy_on_reduction(monkeypatch)
    decoded = decode_image(tmp_path / "large.png", 3, 16)
    # The centred 2976 x 2976 reduced by 3000 // (2 * 16) = 93 before any conversion.
    assert calls == [((4000, 3000), (32, 32))]
    assert decoded.shape == (3, 16, 16)
    assert decoded[:, 1, 8].tolist() == [0, 0, 0]  # top: the black half
    assert decoded[:, 14, 14].tolist() == [255, 0, 0]  # bottom right: red (rotated from top right)
    assert decoded[:, 14, 1].tolist() == [255, 255, 255]  # bottom left: transparent, white


def large_image(mode):
    """A 2100x2100 image (4.4 Mpx, just above the size decoded whole) of ``mode``: a
    left-to-right ramp with a square of another value in the middle; saving options."""
    ramp = np.tile(np.linspace(0, 1, 2100), (2100, 1))
    ramp[700:1400, 700:1400] = 0.25
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16)), {}
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32)), {}
    grey = Image.fromarray((ramp * 255).astype(np.uint8))
    if mode == "1":
        return grey.convert("1"), {}  # dithered
    if mode == "P":
        return grey.convert("P"), {"transparency": 64}  # the middle square is transparent
    if mode == "L":
        return grey, {"transparency": 64}
    return Image.merge("RGBA", (grey, grey, grey, grey)), {}  # more transparent to the left


@pytest.mark.parametrize("mode", ["I;16", "F", "1", "P", "L", "RGBA"])
def test_reduced_decodes_differ_only_slightly_from_whole_ones(tmp_path, monkeypatch, mode):
    image, options = large_image(mode)
    path = tmp_path / ("large.tif" if mode == "F" else "large.png")
    image.save(path, **options)
    calls = spy_on_reduction(monkeypatch)
    reduced = decode_image(path, 3, 16).int()
    assert calls[0][1] == (32, 32)  # the centred 2080 x 2080 reduced by 2100 // (2 * 16) = 65
    monkeypatch.setattr(folder_module, "_REDUCE_ABOVE_PIXELS", 2100 * 2100)
    whole = decode_image(path, 3, 16).int()
    assert calls[1][1] == (2100, 2100)
    difference = (reduced - whole).abs().float()
    # A box filter then bilinear, against bilinear alone: a few levels at sharp edges.
    assert difference.max() <= 6 and difference.mean() <= 1.5, difference


def test_a_large_jpeg_is_drafted_and_small_images_are_not_reduced(tmp_path, monkeypatch):
    Image.new("RGB", (4000, 3000), (0, 90, 200)).save(tmp_path / "large.jpg", quality=90)
    Image.new("RGB", (300, 200), (0, 90, 200)).save(tmp_path / "small.png")
    calls = spy_on_reduction(monkeypatch)
    decoded = decode_image(tmp_path / "large.jpg", 3, 16)
    assert calls == [((500, 375), (500, 375))]  # JPEG draft at 1/8, small enough as it is
    assert (decoded[:, 8, 8] - torch.tensor([0, 90, 200])).abs().max() <= 3
    decode_image(tmp_path / "small.png", 3, 16)
    assert calls[1] == ((300, 200), (300, 200))


def test_jpeg_exif_orientation_is_applied(tmp_path):
    upright = np.zeros((20, 10, 3), np.uint8)  # 10 wide, 20 high: red above blue
    upright[:10] = (255, 0, 0)
    upright[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side, as a camera held upright writes it
    Image.fromarray(upright).rotate(90, expand=True).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    decoded = decode_image(tmp_path / "rotated.jpg", 3, 8).int()
    top, bottom = decoded[:, 1, 4], decoded[:, 6, 4]
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50


def jpeg_with_corrupt_exif(path):
    """A good JPEG whose EXIF block says two tags follow and holds one: Pillow warns
    "Corrupt EXIF data" while reading it and decodes the image anyway."""
    tiff = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<H", 2) + struct.pack("<HHII", 0x0112, 3, 1, 1)
    Image.new("RGB", (16, 16), (10, 200, 30)).save(path, exif=b"Exif\x00\x00" + tiff, quality=95)


@pytest.mark.parametrize("workers", [0, 1])
def test_pillow_warnings_are_counted_not_raised(tmp_path, workers, recwarn):
    jpeg_with_corrupt_exif(tmp_path / "a_corrupt_exif.jpg")
    jpeg_with_corrupt_exif(tmp_path / "b_corrupt_exif.jpg")
    Image.new("RGB", (16, 16)).save(tmp_path / "c_clean.png")
    (tmp_path / "d_broken.png").write_bytes(b"")
    images = load_folder(tmp_path, channels=3, size=8, workers=workers)
    assert len(images) == 3  # files that warned are kept
    assert [path for path, _ in images.warned] == [str(tmp_path / "a_corrupt_exif.jpg"), str(tmp_path / "b_corrupt_exif.jpg")]
    assert all(message.startswith("Corrupt EXIF data.") for _, message in images.warned)
    assert describe_warnings(images.warned) == "2 files decoded with warnings (Corrupt EXIF data: 2)"
    streamed = [entry for batch in iter_folder_batches(tmp_path, 3, 8, batch_size=2, workers=workers) for entry in batch.warned]
    assert streamed == images.warned
    assert len(recwarn) == 0


def test_decode_image_with_warnings_returns_them(tmp_path):
    jpeg_with_corrupt_exif(tmp_path / "a.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would fail here
        decoded = decode_image_with_warnings(tmp_path / "a.jpg", 3, 8)
        assert torch.equal(decoded.image, decode_image(tmp_path / "a.jpg", 3, 8))
    assert decoded.warnings == ("Corrupt EXIF data. Expecting to read 12 bytes but only got 0.",)


def test_describe_warnings_counts_files_per_kind():
    warned = [
        ("a.jpg", "Corrupt EXIF data. Expecting to read 12 bytes but only got 0."),
        ("a.jpg", "Corrupt EXIF data. Expecting to read 24 bytes but only got 2."),  # same file, same kind
        ("b.jpg", "Corrupt EXIF data. Expecting to read 12 bytes but only got 6."),
        ("c.png", "Palette images with Transparency expressed in bytes should be converted to RGBA images"),
        ("c.png", "Tag data larger than file. Skipping tag 271"),
    ]
    assert describe_warnings(warned) == (
        "3 files decoded with warnings (Corrupt EXIF data: 2, Palette images with Transparency expressed in bytes "
        "should be converted to RGBA images: 1, Tag data larger than file: 1)"
    )
    assert describe_warnings(warned[4:]) == "1 file decoded with warnings (Tag data larger than file: 1)"
    assert describe_warnings([]) == ""


# --------------------------------------------------------------------- opaque images, as before


_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def decode_before_transparency_and_limits(path, channels, size):
    """decode_image as it was before backgrounds, pixel limits and reduced decodes."""
    mode = {1: "L", 3: "RGB"}[channels]
    with Image.open(path) as image:
        image.draft(mode, (size, size))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode in _WIDE_MODES:
            image = Image.fromarray(wide_to_uint8_before(np.asarray(image), image.mode), mode="L")
        elif image.has_transparency_data:
            raise AssertionError("opaque images only")
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = image if image.mode == mode else image.convert(mode)
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1).contiguous()


def wide_to_uint8_before(values, mode):
    values = values.astype(np.float64)
    if mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        elif high > low:
            scaled = (values - low) * (255.0 / (high - low))
        else:
            scaled = np.zeros_like(values)
    else:
        full_scale = 2**16 - 1 if mode != "I" or values.max() <= 2**16 - 1 else 2**31 - 1
        scaled = values * (255.0 / full_scale)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def test_opaque_images_decode_exactly_as_before(tmp_path):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "rgb.png": lambda path: noise.save(path),
        "grey.png": lambda path: noise.convert("L").save(path),
        "grey16.png": lambda path: Image.fromarray(rng.integers(0, 65535, (41, 29), dtype=np.uint16)).save(path),
        "int32.tif": lambda path: Image.fromarray(rng.integers(0, 2**31 - 1, (20, 30), dtype=np.int32)).save(path),
        "float.tif": lambda path: Image.fromarray(rng.random((20, 30), dtype=np.float32) * 7).save(path),
        "palette.png": lambda path: noise.convert("P").save(path),
        "bilevel.png": lambda path: noise.convert("1").save(path),
        "cmyk.jpg": lambda path: noise.convert("CMYK").save(path),
        "photo.jpg": lambda path: noise.resize((400, 300)).save(path, quality=90),  # drafted at size 8
        "rotated.png": lambda path: noise.save(path, exif=exif),
    }
    for name, write in files.items():
        write(tmp_path / name)
        for channels, size in ((1, 8), (3, 8), (3, 24)):
            expected = decode_before_transparency_and_limits(tmp_path / name, channels, size)
            assert torch.equal(decode_image(tmp_path / name, channels, size), expected), (name, channels, size)
