"""Unreadable, corrupt, empty and absurdly large images: a clear line each, never a traceback."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import PRETRAINED, run_edge
from edge.errors import ImageError
from edge.vision.decode import decode_image, read_image_file


def png_bytes(width, height, mode="1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, ham_images):
    folder = tmp_path_factory.mktemp("bad")
    good_jpeg = ham_images[0].read_bytes()
    files = {
        "empty.jpg": b"",
        "text.jpg": b"this is not an image at all\n" * 10,
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 3],
        "bomb.png": png_bytes(12_000, 12_000),  # 144 MP of 1-bit pixels in a few kB
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "a-folder.jpg").mkdir()
    return folder


@pytest.mark.parametrize("name, message", [
    ("empty.jpg", "empty file"),
    ("text.jpg", "not an image"),
    ("truncated.jpg", "corrupt or truncated"),
    ("bomb.png", r"12000x12000 \(144 MP\), above the 40 MP limit"),
    ("a-folder.jpg", "is a folder"),
    ("missing.jpg", "no such file"),
])
def test_decoder_refuses_with_a_reason(bad_files, name, message):
    with pytest.raises(ImageError, match=message):
        read_image_file(bad_files / name)


def _peak_memory_kb_decoding(path) -> int:
    """Peak memory of a fresh process that decodes ``path``: this process's own peak is already high, and
    getrusage's maxrss survives fork and exec, so the child reads its VmHWM (reset by exec) itself."""
    import subprocess
    import sys

    code = ("import re, sys\nfrom edge.vision.decode import decode_image\nfrom edge.errors import ImageError\n"
            "try:\n    decode_image(open(sys.argv[1], 'rb').read())\nexcept ImageError:\n    pass\n"
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_bomb_is_refused_before_pixels_are_allocated(bad_files, tmp_path):
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(64, 64))
    with pytest.raises(ImageError):
        decode_image((bad_files / "bomb.png").read_bytes())
    # 144 MP would take at least 144 MB to hold: refusing from the header costs next to nothing
    assert _peak_memory_kb_decoding(bad_files / "bomb.png") - _peak_memory_kb_decoding(small) < 30_000


def test_byte_limit_and_tiny_images():
    with pytest.raises(ImageError, match="above the 0.0 MB limit"):
        decode_image(png_bytes(64, 64, "RGB"), max_bytes=10)
    with pytest.raises(ImageError, match="too small"):
        decode_image(png_bytes(4, 4, "RGB"))


def test_exotic_modes_become_rgb():
    for mode in ("L", "RGBA", "P", "CMYK", "I;16"):
        buffer = io.BytesIO()
        Image.new(mode, (32, 24)).save(buffer, format="TIFF")
        image = decode_image(buffer.getvalue())
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8


def test_exif_orientation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.new("RGB", (40, 20)).save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue()).shape == (40, 20, 3)


def test_a_phone_photo_with_odd_exif_tags_is_still_read_and_turned_upright():
    """Phones store some EXIF tags with unexpected types; Pillow's exif_transpose rewrites the block and
    raised struct.error on them (HTTP 500, and the CLI lost the rest of its batch)."""
    import struct

    entries = [struct.pack(">HHII", 0x0112, 3, 1, 6 << 16),  # Orientation = 6 (SHORT)
               struct.pack(">HHI4s", 0x0153, 2, 4, b"App\0")]  # SampleFormat stored as ASCII
    ifd = struct.pack(">H", len(entries)) + b"".join(entries) + struct.pack(">I", 0)
    exif = b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 120, 90)).save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue()).shape == (40, 20, 3)


def test_high_bit_depth_grey_is_scaled_not_clipped():
    """Pillow's convert clips 16-bit grey at 255: a mid-grey 16-bit PNG became white ("too bright")."""
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I")
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (48, 64, 3) and decoded[0, 0, 0] == 0 and decoded[0, -1, 0] == 255
    assert abs(float(decoded.mean()) - 127.5) < 2
    floats = io.BytesIO()
    Image.fromarray(np.full((24, 32), 0.5, np.float32)).save(floats, format="TIFF")
    with pytest.raises(ImageError, match="floating-point images are not supported"):
        decode_image(floats.getvalue())


def test_cli_reports_each_bad_image_and_keeps_going(imagenet_pack, bad_files):
    names = ["empty.jpg", "text.jpg", "truncated.jpg", "bomb.png", "a-folder.jpg", "missing.jpg"]
    images = [str(bad_files / n) for n in names[:3]] + [str(PRETRAINED / "grace_hopper.bmp")] + \
             [str(bad_files / n) for n in names[3:]]
    result = run_edge("classify", "--json", "--model", str(imagenet_pack), *images)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == images
    assert records[3]["label"] == "military uniform"
    errors = [r for r in records if "error" in r]
    assert len(errors) == 6 and all(r["error"] for r in errors)


def test_cli_text_mode_prints_one_line_per_bad_image(imagenet_pack, bad_files):
    result = run_edge("classify", "--model", str(imagenet_pack), str(bad_files / "text.jpg"),
                      str(PRETRAINED / "grace_hopper.bmp"))
    assert result.returncode == 1
    assert "military uniform" in result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("edge:")]
    assert len(error_lines) == 1 and "text.jpg" in error_lines[0]
