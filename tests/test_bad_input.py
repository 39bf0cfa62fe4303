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


def _peak_memory_kb_decoding(path, threads: int = 1) -> int:
    """Peak memory of a fresh process that decodes ``path`` (in ``threads`` threads at once, as the kiosk's
    server threads may): this process's own peak is already high, and getrusage's maxrss survives fork and
    exec, so the child reads its VmHWM (reset by exec) itself."""
    import subprocess
    import sys

    code = ("import re, sys, threading\nfrom edge.vision.decode import decode_image\nfrom edge.errors import ImageError\n"
            "data = open(sys.argv[1], 'rb').read()\n"
            "def one():\n    try:\n        decode_image(data)\n    except ImageError:\n        pass\n"
            "workers = [threading.Thread(target=one) for _ in range(int(sys.argv[2]))]\n"
            "[w.start() for w in workers]\n[w.join() for w in workers]\n"
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(threads)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_bomb_is_refused_before_pixels_are_allocated(bad_files, tmp_path):
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(64, 64))
    with pytest.raises(ImageError):
        decode_image((bad_files / "bomb.png").read_bytes())
    # 144 MP would take at least 144 MB to hold: refusing from the header costs next to nothing
    assert _peak_memory_kb_decoding(bad_files / "bomb.png") - _peak_memory_kb_decoding(small) < 30_000


def test_a_small_file_of_many_deep_pixels_takes_bounded_memory(tmp_path):
    """A 77 kB 16-bit grey PNG of 6300x6300 passes the 40 MP limit; decoding it at full size through float
    copies took 1 GB, and four kiosk uploads at once 3.5 GB. Now it is reduced before any conversion, decoded
    one at a time, and comes out at the decoded-size limit."""
    deep = tmp_path / "deep.png"
    Image.fromarray(np.zeros((6300, 6300), np.uint16)).save(deep, format="PNG", optimize=True)
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(64, 64))
    assert deep.stat().st_size < 200_000
    assert decode_image(deep.read_bytes()).shape == (2048, 2048, 3)
    baseline = _peak_memory_kb_decoding(small)
    # The 16-bit frame itself is 79 MB and its 32-bit conversion 159 MB: what a decode has to hold, once.
    assert _peak_memory_kb_decoding(deep, threads=4) - baseline < 400_000


def test_elongated_images_are_refused_from_the_header(tmp_path):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1200, 30000), np.uint16)).save(strip, format="PNG", optimize=True)
    with pytest.raises(ImageError, match=r"30000x1200: too elongated"):
        decode_image(strip.read_bytes())


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def test_large_photos_are_decoded_to_the_size_limit_upright_and_unchanged_in_content():
    photo = np.zeros((3000, 5000, 3), np.uint8)
    photo[:, :2500] = (200, 60, 40)  # left half red, right half blue
    photo[:, 2500:] = (40, 60, 200)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the red half ends up on top
    for data, shape in ((_jpeg(photo), (1229, 2048, 3)), (_jpeg(photo, exif=exif), (2048, 1229, 3))):
        decoded = decode_image(data)
        assert decoded.shape == shape
    top, bottom = decoded[:500].reshape(-1, 3).mean(axis=0), decoded[-500:].reshape(-1, 3).mean(axis=0)
    assert abs(top - (200, 60, 40)).max() < 4 and abs(bottom - (40, 60, 200)).max() < 4
    png = io.BytesIO()
    Image.fromarray(photo).save(png, format="PNG")
    assert decode_image(png.getvalue()).shape == (1229, 2048, 3)


def test_a_jpeg_with_damaged_data_is_refused_not_classified(ham_images):
    """Pillow decodes a JPEG whose middle is overwritten without complaint: the rest of the picture comes out
    grey and was classified as if it were the photo."""
    good = ham_images[0].read_bytes()
    middle = len(good) // 2
    damaged = good[:middle] + b"\xaa" * 500 + good[middle + 500:]
    with pytest.raises(ImageError, match="corrupt or truncated image .*damaged"):
        decode_image(damaged)
    expected = decode_image(good)
    # Bytes after the end of the image, or stray bytes before its end marker, leave every pixel intact.
    assert np.array_equal(decode_image(good + b"\0" * 64), expected)
    assert np.array_equal(decode_image(good[:-2] + b"\x00\x00\x00" + good[-2:]), expected)


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


def _segments(data: bytes) -> list[tuple[int, int]]:
    """(offset, marker) of a JPEG's header segments, up to its first scan."""
    import struct

    offset, found = 2, []
    while offset < len(data):
        marker, length = data[offset + 1], struct.unpack(">H", data[offset + 2:offset + 4])[0]
        found.append((offset, marker))
        if marker == 0xDA:
            return found
        offset += 2 + length
    return found


def test_jpeg_warnings_that_leave_every_pixel_intact_do_not_refuse_a_photo(ham_images):
    """A review: simplejpeg raises on header warnings even when not strict, so ordinary phone photos were
    refused as damaged: padding between header segments, a JFIF 2.01 header, and the scan parameters Samsung
    phones write ("Invalid SOS parameters for sequential JPEG"). They are decoded as Pillow did before."""
    good = ham_images[0].read_bytes()
    expected = decode_image(good)
    segments = _segments(good)
    dqt = next(offset for offset, marker in segments if marker == 0xDB)
    padded = good[:dqt] + b"\0\0" + good[dqt:]
    app0 = next(offset for offset, marker in segments if marker == 0xE0)
    jfif = bytearray(good)
    assert jfif[app0 + 4:app0 + 9] == b"JFIF\0"
    jfif[app0 + 9:app0 + 11] = b"\x02\x01"
    sos = segments[-1][0]
    samsung = bytearray(good)
    samsung[sos + 5 + 2 * samsung[sos + 4]] = 1  # Ss = 1 on a sequential JPEG
    for data in (padded, bytes(jfif), bytes(samsung)):
        assert decode_image(data).shape == expected.shape
    assert np.array_equal(decode_image(bytes(jfif)), expected)


def test_a_jpeg_with_hundreds_of_scans_is_refused_before_decoding(ham_images):
    """Each repeated scan costs a whole pass over the image: 20,000 copies of one took 30 s, and every upload
    after it waited on the one decoder."""
    import time

    good = ham_images[0].read_bytes()
    sos = _segments(good)[-1][0]
    repeated = good[:sos] + good[sos:sos + 200] * 150 + good[sos:]
    started = time.monotonic()
    with pytest.raises(ImageError, match="more than 100 scans"):
        decode_image(repeated)
    assert time.monotonic() - started < 1.0


def test_formats_outside_the_upload_list_are_not_opened():
    """Pillow would hand an EPS file to Ghostscript (when installed), with no time limit, on the one decoder."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{} loop\n%%EOF\n"
    with pytest.raises(ImageError, match="not an image, or a format this device cannot read"):
        decode_image(eps)
