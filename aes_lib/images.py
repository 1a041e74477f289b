"""The one way every stage reads an image's pixels: :func:`load_rgb`.

Data checks, the import check, training, evaluation, the notebooks and the annotation tool all
see the same picture a photo viewer shows:

* EXIF orientation is applied (a phone's portrait JPEG is upright, not sideways);
* 16-bit and 32-bit grayscale (``I;16``, ``I``, ``F``) are scaled to 8 bits, not clipped (a
  16-bit PNG would otherwise turn almost white);
* palette images and images with transparency are drawn over white;
* CMYK (and YCbCr, LAB, HSV) are converted to RGB;
* animated or multi-frame files (GIF, APNG, WebP, multi-page TIFF) are refused with a reason:
  which frame is "the image" is the user's choice, not ours.

:func:`unsupported_reason` is the check the importers and ``aes data verify`` run, so such a
file is rejected when it enters, with the reason, and never reaches a later stage.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

#: modes whose pixels are more than 8 bits per channel (PIL's names)
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


class UnsupportedImage(ValueError):
    """An image file the pipeline refuses (the message names the file and why)."""


def unsupported_reason(im) -> str | None:
    """Why an opened image cannot be used (animated / several frames), or None."""
    frames = getattr(im, "n_frames", 1) or 1
    if frames > 1:
        return (f"animated or multi-frame image ({frames} frames); save the frame to use as a "
                "single PNG or JPEG")
    return None


def to_rgb(im):
    """An opened PIL image as the 8-bit, upright RGB image a viewer shows (see the module)."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im) or im
    mode = im.mode
    if mode in _WIDE_MODES:
        a = np.asarray(im)
        if a.dtype.kind == "f":
            a = a * 255.0 if np.nanmax(a, initial=0) <= 1.0 else a
        elif mode.startswith("I;16") or (mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0   # 16 bits to 8: 65535 -> 255
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | Path):
    """Open ``path`` and return its pixels as an 8-bit upright RGB PIL image (see the module).
    Raises :class:`UnsupportedImage` for an animated file, ``FileNotFoundError`` naming the file
    when it is missing."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    with Image.open(path) as im:
        reason = unsupported_reason(im)
        if reason:
            raise UnsupportedImage(f"{path}: {reason}")
        im.load()
        return to_rgb(im)


def needs_conversion(im) -> bool:
    """True when showing the file's own bytes could differ from :func:`load_rgb`'s picture
    (orientation tag, wide or alpha or palette or CMYK modes, formats a browser may not show)."""
    orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    return (orientation not in (None, 1) or im.format not in ("PNG", "JPEG")
            or im.mode not in ("RGB", "L"))


def display_bytes(path: str | Path) -> tuple[bytes, str]:
    """``(bytes, format)`` to show ``path`` in a browser as :func:`load_rgb` sees it: the file
    itself when it is a plain 8-bit RGB/gray PNG or JPEG, otherwise a PNG of the loaded pixels."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            if not needs_conversion(im):
                return path.read_bytes(), im.format.lower()
        buf = io.BytesIO()
        load_rgb(path).save(buf, format="PNG")
        return buf.getvalue(), "png"
    except (OSError, ValueError, SyntaxError, EOFError):   # unreadable: the browser says so itself
        return path.read_bytes(), path.suffix.lstrip(".").lower().replace("jpg", "jpeg") or "png"
