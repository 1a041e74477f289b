"""The one image loader (aes_lib.images): what every stage sees is what a photo viewer shows.
Real image files of every awkward kind, read through the loader and through the stages."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aes_lib.images import UnsupportedImage, display_bytes, load_rgb
from conftest import REPO


def _halves(width=40, height=20) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = (255, 0, 0)
    a[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.fixture
def odd(tmp_path) -> dict[str, Path]:
    files = {}
    gray16 = (np.full((16, 16), 32768, np.uint16))    # mid-grey at 16 bits
    files["gray16"] = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(files["gray16"])
    files["rotated"] = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6   # viewers turn the stored picture 90 degrees clockwise
    _halves().save(files["rotated"], "JPEG", quality=95, exif=exif.tobytes())
    files["palette_alpha"] = tmp_path / "palette.png"
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] + [0, 255, 0] * 255)
    pal.info["transparency"] = 0   # index 0 (black) is transparent: drawn over white
    pal.save(files["palette_alpha"], transparency=0)
    files["rgba"] = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(files["rgba"])
    files["cmyk"] = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(files["cmyk"], "JPEG", quality=95)   # red
    files["animated"] = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    return files


def test_16_bit_grey_is_scaled_not_clipped_to_white(odd):
    a = np.asarray(load_rgb(odd["gray16"]))
    assert a.shape == (16, 16, 3) and abs(int(a.mean()) - 128) <= 1


def test_exif_orientation_is_applied(odd):
    im = load_rgb(odd["rotated"])
    assert im.size == (20, 40)   # portrait, as viewers show it
    a = np.asarray(im).astype(int)
    assert a[5, 10, 0] > 200 and a[5, 10, 2] < 60     # top: the red half
    assert a[35, 10, 2] > 200 and a[35, 10, 0] < 60   # bottom: the blue half


def test_transparency_is_drawn_over_white_and_cmyk_is_converted(odd):
    assert np.asarray(load_rgb(odd["palette_alpha"])).min() == 255
    assert np.asarray(load_rgb(odd["rgba"])).min() == 255
    r, g, b = np.asarray(load_rgb(odd["cmyk"])).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_animated_files_are_refused_naming_the_file(odd):
    with pytest.raises(UnsupportedImage, match=r"anim\.gif: animated or multi-frame image \(2 frames\)"):
        load_rgb(odd["animated"])


def test_the_tool_shows_what_the_stages_see(odd):
    for name in ("gray16", "rotated", "cmyk"):
        data, fmt = display_bytes(odd[name])
        import io
        shown = Image.open(io.BytesIO(data))
        assert fmt == "png" and np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(load_rgb(odd[name])))
    plain = odd["gray16"].with_name("plain.png")
    Image.new("RGB", (4, 4), (1, 2, 3)).save(plain)
    assert display_bytes(plain) == (plain.read_bytes(), "png")   # a plain file is shown as it is


def test_import_and_data_verify_reject_an_animated_file_with_its_reason(tmp_path, odd):
    from aes_lib.data import check_image

    assert check_image(odd["animated"]).startswith("animated or multi-frame image")
    csv = tmp_path / "lab.csv"
    csv.write_text("image,grade,description,annotator\n"
                   "anim.gif,good,A calm scene with soft light and a clear subject.,ann\n"
                   "gray16.png,good,A calm scene with soft light and a clear subject.,ann\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "aes_lib.cli", "collect", "import", str(csv), "--format", "csv",
                           "--images", str(odd["animated"].parent), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rejects = [json.loads(line) for line in (out / "critiques/rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["record"]["image"]).name, r["reason"]) for r in rejects] == [("anim.gif", "unsupported image")]
    assert "anim.gif" in rejects[0]["detail"] and "2 frames" in rejects[0]["detail"]


def test_notebook_preview_is_upright(odd):
    from aes_lib.nb import preview

    shown = Image.open(__import__("io").BytesIO(preview(odd["rotated"]).data))
    assert shown.size == (20, 40)


def test_no_stage_reads_pixels_around_the_loader():
    """Every `Image.open(...)` whose pixels a stage uses goes through aes_lib.images: a direct
    `.convert("RGB")` of an opened file would skip orientation and 16-bit scaling."""
    def a_file(call: ast.Call) -> bool:   # not bytes the code made itself (io.BytesIO, buf)
        arg = ast.unparse(call.args[0]) if call.args else ""
        return "BytesIO" not in arg and arg != "buf"

    offenders = []
    for path in sorted((REPO / "aes_lib").rglob("*.py")):
        if path.name == "images.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        opened = set()
        for node in ast.walk(tree):   # names bound by `with Image.open(...) as im`
            if isinstance(node, ast.withitem) and isinstance(node.context_expr, ast.Call) \
                    and ast.unparse(node.context_expr.func).endswith("Image.open") and node.optional_vars is not None \
                    and a_file(node.context_expr):
                opened.add(ast.unparse(node.optional_vars))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "convert" \
                    and node.args and ast.unparse(node.args[0]) == "'RGB'":
                target = ast.unparse(node.func.value)
                inline = isinstance(node.func.value, ast.Call) and ast.unparse(node.func.value.func).endswith("Image.open")
                if target in opened or (inline and a_file(node.func.value)):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders
