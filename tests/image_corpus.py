"""Writes images in the variants Pillow (libjpeg, zlib) produces, for ImageFolder's test against them.

    python3 tests/image_corpus.py OUT_DIR

For each variant NAME: OUT_DIR/NAME/cls/NAME.EXT (a one-image image folder), OUT_DIR/NAME.rgb (the
pixels Pillow decodes, as interleaved RGB bytes), and a line "NAME WIDTH HEIGHT TOLERANCE" in
OUT_DIR/list.txt. TOLERANCE is the largest mean absolute difference per value allowed between
stb_image's decode and Pillow's: 0 for lossless formats, 1 for JPEG (decoders differ in their IDCT and
chroma upsampling; measured: 0.006 to 0.47).
"""
import os
import sys

import numpy as np
from PIL import Image


def main(out):
    rng = np.random.default_rng(7)
    w, h = 37, 21
    y, x = np.mgrid[0:h, 0:w]
    smooth = np.stack([(x * 6 + y * 3) % 256, (y * 11 + 40) % 256, (x * y) % 256], axis=-1).astype(np.uint8)
    rgb = Image.fromarray(smooth, "RGB")
    rgba = Image.fromarray(np.dstack([smooth, (x * 5 % 256).astype(np.uint8)]), "RGBA")
    grey = rgb.convert("L")
    noisy = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8), "RGB")  # several IDATs

    variants = [
        ("png_rgb", rgb, "png", {}, 0),
        ("png_rgb_level0", rgb, "png", {"compress_level": 0}, 0),
        ("png_rgb_optimize", rgb, "png", {"optimize": True}, 0),
        ("png_rgba", rgba, "png", {}, 0),
        ("png_grey", grey, "png", {}, 0),
        ("png_grey_alpha", rgba.convert("LA"), "png", {}, 0),
        ("png_palette", rgb.quantize(64), "png", {}, 0),
        ("png_palette_4bit", rgb.quantize(16), "png", {"bits": 4}, 0),
        ("png_bilevel", grey.point(lambda v: 255 if v > 100 else 0).convert("1"), "png", {}, 0),
        ("png_noisy_many_idat", noisy, "png", {}, 0),
        ("jpeg_444", rgb, "jpg", {"quality": 95, "subsampling": 0}, 1.0),
        ("jpeg_422", rgb, "jpg", {"quality": 90, "subsampling": 1}, 1.0),
        ("jpeg_420", rgb, "jpg", {"quality": 90, "subsampling": 2}, 1.0),
        ("jpeg_progressive", rgb, "jpg", {"quality": 90, "progressive": True}, 1.0),
        ("jpeg_optimize", rgb, "jpg", {"quality": 75, "optimize": True}, 1.0),
        ("jpeg_grey", grey, "jpg", {"quality": 90}, 1.0),
        ("jpeg_grey_progressive", grey, "jpg", {"quality": 90, "progressive": True}, 1.0),
        ("jpeg_noisy_420", noisy, "jpg", {"quality": 85}, 1.0),
        ("bmp_rgb", rgb, "bmp", {}, 0),
        ("bmp_grey", grey, "bmp", {}, 0),
        ("bmp_palette", rgb.quantize(200), "bmp", {}, 0),
        ("bmp_bilevel", grey.point(lambda v: 255 if v > 100 else 0).convert("1"), "bmp", {}, 0),
    ]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "list.txt"), "w") as listing:
        for name, image, ext, options, tolerance in variants:
            folder = os.path.join(out, name, "cls")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, name + "." + ext)
            image.save(path, **options)
            with Image.open(path) as decoded:
                pixels = decoded.convert("RGB")
                pixels.load()
            with open(os.path.join(out, name + ".rgb"), "wb") as f:
                f.write(pixels.tobytes())
            listing.write(f"{name} {pixels.width} {pixels.height} {tolerance}\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
