"""Stage 0: AesMMIT-mini, a small dataset of real photos with degraded variants of known strength.

The photos load with no download from installed packages: 16 ship inside pip packages
(scikit-image, scikit-learn, matplotlib) and install everywhere (photo set ``mini-16``); the rest
come from Debian packages of desktop wallpapers and OpenCV's sample data, which ``make photos``
installs with apt-get (the full set, the default where those packages are installed).
``aes_lib/assets/photos.yaml`` lists every photo with its package, licence and hand-written
traits. Each photo gets deterministic degraded variants (exposure, blur, noise, JPEG, colour,
tilt, crop) whose kind and strength are recorded, so later questions about technical quality and
colour have checkable answers. Splits are by source photo: no photo's variants cross splits.

    aes data build --out outputs/data      # images + manifest.json, byte-identical on rebuild
    aes data verify outputs/data/manifest.json
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aes_lib.config import Config, require
from aes_lib.images import load_rgb, to_rgb, unsupported_reason
from aes_lib.io import read_json, sha256_file, write_json, atomic_write_bytes
from aes_lib.schema import DEGRADATIONS, ImageRecord, manifest_records, write_jsonl

log = logging.getLogger(__name__)

DATASET_NAME = "AesMMIT-mini"
MANIFEST_VERSION = 1
#: loader prefix of photos read from a file that a Debian package installs
SYSTEM_PREFIX = "debian:"
PHOTO_SET_CHOICES = ("auto", "full", "mini")


@dataclass
class DataConfig(Config):
    out: str = field(default="outputs/data", metadata={"help": "folder for images/ and manifest.json"})
    max_side: int = field(default=256, metadata={"help": "longest image side in pixels after resizing"})
    photos: list = field(default_factory=list, metadata={"help": "photo ids to use (empty = the photo set)"})
    photo_set: str = field(default="auto", metadata={
        "help": "auto (full where its Debian packages are installed, else mini), full (all photos), "
                "mini (the pip-package photos only); ignored when photos is given"})
    degradations: list = field(default_factory=lambda: [d for d in DEGRADATIONS if d != "none"],
                               metadata={"help": "degradation kinds to apply to every photo"})
    split_fractions: list = field(default_factory=lambda: [0.625, 0.1875, 0.1875],
                                  metadata={"help": "train / val / test fractions of source photos"})
    seed: int = field(default=0, metadata={"help": "seed for split assignment, strengths and noise"})

    def check(self) -> None:
        require(32 <= self.max_side <= 4096, "max_side", "must be between 32 and 4096")
        require(self.photo_set in PHOTO_SET_CHOICES, "photo_set", f"must be one of {list(PHOTO_SET_CHOICES)}")
        unknown = sorted(set(self.degradations) - set(DEGRADATIONS) - {"none"})
        require(not unknown, "degradations", f"unknown kinds {unknown}; known: {DEGRADATIONS[1:]}")
        require(len(self.split_fractions) == 3 and abs(sum(self.split_fractions) - 1) < 1e-6
                and all(f >= 0 for f in self.split_fractions), "split_fractions",
                "must be three non-negative fractions summing to 1")
        known = {p["id"] for p in load_photo_catalogue()["photos"]}
        require(set(self.photos) <= known, "photos", f"unknown photo ids {sorted(set(self.photos) - known)}")


# --- the source photos ------------------------------------------------------------------------

def load_photo_catalogue() -> dict[str, Any]:
    import yaml

    text = resources.files("aes_lib").joinpath("assets/photos.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def is_system_photo(photo: dict[str, Any]) -> bool:
    """True for a photo read from a file a Debian package installs (not from a pip package)."""
    return str(photo["loader"]).startswith(SYSTEM_PREFIX)


def system_photo_path(photo: dict[str, Any]) -> Path:
    return Path(str(photo["loader"])[len(SYSTEM_PREFIX):])


def system_packages(catalogue: list[dict[str, Any]] | None = None) -> list[str]:
    """The Debian packages the full photo set reads from, sorted."""
    catalogue = load_photo_catalogue()["photos"] if catalogue is None else catalogue
    return sorted({p["package"] for p in catalogue if is_system_photo(p)})


def missing_system_photos(catalogue: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The catalogue's Debian-package photos whose file is not installed here."""
    catalogue = load_photo_catalogue()["photos"] if catalogue is None else catalogue
    return [p for p in catalogue if is_system_photo(p) and not system_photo_path(p).is_file()]


def install_hint(packages: list[str]) -> str:
    return (f"install the Debian package(s) {' '.join(packages)} (as root: `make photos`, or "
            f"`apt-get install {' '.join(packages)}`); on macOS or Windows use photo_set='mini'")


def photo_set_name(kind: str, n_photos: int) -> str:
    """The photo set's label, e.g. ``full-69`` or ``mini-16``: numbers from different sets never compare."""
    return f"{kind}-{n_photos}"


def select_photos(cfg: "DataConfig") -> tuple[list[dict[str, Any]], str]:
    """The catalogue entries a build uses and the photo set's name.

    ``photos`` given: exactly those (set ``custom-N``, unless they are a whole set). Otherwise
    ``photo_set``: ``mini`` is the pip-package photos, ``full`` all of them; ``auto`` is ``full``
    when every Debian-package photo is installed, ``mini`` (with a warning) when none is, and an
    error naming the missing files when only some are (a half-installed set is never used quietly).
    """
    catalogue = load_photo_catalogue()["photos"]
    mini = [p for p in catalogue if not is_system_photo(p)]
    if cfg.photos:
        chosen = [p for p in catalogue if p["id"] in cfg.photos]
        kind = "mini" if chosen == mini else "full" if chosen == catalogue else "custom"
    else:
        kind = cfg.photo_set
        if kind == "auto":
            missing = missing_system_photos(catalogue)
            n_system = sum(map(is_system_photo, catalogue))
            if not missing:
                kind = "full"
            elif len(missing) == n_system:
                log.warning("the Debian-package photos are not installed: building photo set %s; for "
                            "the full set, %s", photo_set_name("mini", len(mini)),
                            install_hint(system_packages(catalogue)))
                kind = "mini"
            else:
                raise FileNotFoundError(
                    f"{len(missing)} of {n_system} Debian-package photos missing, first: "
                    f"{system_photo_path(missing[0])}; {install_hint(sorted({p['package'] for p in missing}))}")
        chosen = mini if kind == "mini" else catalogue
    return chosen, photo_set_name(kind, len(chosen))


def load_photo(loader: str, max_side: int | None = None):
    """Load a photo as an RGB PIL image, without any download.

    ``loader`` is ``package.name`` for a photo inside a pip package, or ``debian:/path`` for a file
    a Debian package installs. ``max_side`` lets a large JPEG decode at a reduced scale (at least
    twice that side), which is exact and deterministic but much faster.
    """
    from PIL import Image

    if loader.startswith(SYSTEM_PREFIX):
        path = Path(loader[len(SYSTEM_PREFIX):])
        if not path.is_file():
            raise FileNotFoundError(f"photo file {path} not found: its Debian package is not installed "
                                    f"(`make photos` as root installs every package of the full set)")
        with Image.open(path) as im:
            if max_side and im.format == "JPEG":
                im.draft("RGB", (2 * max_side, 2 * max_side))
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                if np.asarray(im)[..., 3].min() < 255:
                    raise ValueError(f"photo file {path}: has transparent pixels; not a photograph")
            return to_rgb(im)   # upright (EXIF orientation), 8-bit RGB
    package, _, name = loader.rpartition(".")
    if package == "skimage.data":
        import skimage.data

        array = getattr(skimage.data, name)()
    elif package == "sklearn":
        from sklearn.datasets import load_sample_image

        array = load_sample_image(f"{name}.jpg")
    elif package == "matplotlib":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data(f"{name}.jpg") as fh:
            return to_rgb(Image.open(fh))
    else:
        raise ValueError(f"photo loader {loader!r}: unknown package {package!r}")
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)
    image = Image.fromarray(array)
    return image.convert("RGB")


def is_grayscale(image) -> bool:
    a = np.asarray(image, dtype=np.int16)
    return bool(np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2)


def resize_max_side(image, max_side: int):
    from PIL import Image

    w, h = image.size
    scale = max_side / max(w, h)
    if scale >= 1:
        return image
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


# --- degradations -----------------------------------------------------------------------------
# Each takes (image, strength in (0, 1], rng) and returns (image, params). Strength 1 is the
# strongest variant; the params are the exact values used, recorded in the manifest.

def _to_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def _from_array(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def overexpose(image, s, rng):
    gain = 1.0 + 1.5 * s
    return _from_array(_to_array(image) * gain + 40 * s), {"gain": gain, "offset": 40 * s}


def underexpose(image, s, rng):
    gain = 1.0 - 0.75 * s
    return _from_array(_to_array(image) * gain), {"gain": gain}


def blur(image, s, rng):
    from PIL import ImageFilter

    radius = round(1.0 + 4.0 * s, 3)
    return image.filter(ImageFilter.GaussianBlur(radius)), {"gaussian_radius_px": radius}


def add_noise(image, s, rng):
    sigma = 10.0 + 40.0 * s
    noisy = _to_array(image) + rng.normal(0.0, sigma, size=np.asarray(image).shape)
    return _from_array(noisy), {"gaussian_sigma": sigma}


def jpeg(image, s, rng):
    from PIL import Image

    quality = int(round(30 - 25 * s))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB"), {"jpeg_quality": quality}


def color_cast(image, s, rng):
    warm = bool(rng.integers(0, 2))
    shift = 0.45 * s
    gains = np.array([1 + shift, 1 + shift / 3, 1 - shift]) if warm else np.array([1 - shift, 1, 1 + shift])
    return _from_array(_to_array(image) * gains), {"cast": "warm" if warm else "cool",
                                                   "channel_gains": [round(float(g), 4) for g in gains]}


def desaturate(image, s, rng):
    from PIL import ImageEnhance

    factor = round(1.0 - s, 3)
    return ImageEnhance.Color(image).enhance(factor), {"saturation_factor": factor}


def tilt(image, s, rng):
    from PIL import Image

    angle = round((4.0 + 11.0 * s) * (1 if rng.integers(0, 2) else -1), 2)
    w, h = image.size
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    # crop the largest centred box free of the black corners, then scale back to the old size
    t = abs(np.deg2rad(angle))
    cw = (w * np.cos(t) - h * np.sin(t)) / np.cos(2 * t)
    ch = (h * np.cos(t) - w * np.sin(t)) / np.cos(2 * t)
    cw, ch = max(8, int(cw)), max(8, int(ch))
    left, top = (w - cw) // 2, (h - ch) // 2
    out = rotated.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BICUBIC)
    return out, {"angle_deg": angle}


def bad_crop(image, s, rng):
    from PIL import Image

    keep = round(1.0 - 0.5 * s, 3)
    corner = ["top-left", "top-right", "bottom-left", "bottom-right"][int(rng.integers(0, 4))]
    w, h = image.size
    cw, ch = int(w * keep), int(h * keep)
    left = 0 if "left" in corner else w - cw
    top = 0 if "top" in corner else h - ch
    out = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BICUBIC)
    return out, {"kept_fraction": keep, "corner": corner}


DEGRADE: dict[str, Callable] = {
    "overexposed": overexpose, "underexposed": underexpose, "blur": blur, "noise": add_noise,
    "jpeg": jpeg, "color_cast": color_cast, "desaturated": desaturate, "tilted": tilt,
    "bad_crop": bad_crop,
}
#: Strengths a variant may get; each (photo, kind) draws one deterministically.
STRENGTHS = (0.5, 0.75, 1.0)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def assign_splits(photo_ids: list[str], fractions=(0.625, 0.1875, 0.1875), seed: int = 0) -> dict[str, str]:
    """Assign each source photo to one split, deterministically for a seed."""
    order = sorted(photo_ids, key=lambda pid: hashlib.sha256(f"{seed}|{pid}".encode()).hexdigest())
    n = len(order)
    n_test = max(1, round(n * fractions[2])) if n >= 3 and fractions[2] > 0 else 0
    n_val = max(1, round(n * fractions[1])) if n >= 3 and fractions[1] > 0 else 0
    n_train = n - n_val - n_test
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return dict(zip(order, splits))


def png_bytes(image) -> bytes:
    """PNG bytes with no metadata, so the same pixels always give the same bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# --- building ---------------------------------------------------------------------------------

def build_dataset(cfg: DataConfig | None = None, progress: bool = True) -> Path:
    """Write ``images/*.png`` and ``manifest.json`` under ``cfg.out``; returns the manifest path."""
    from tqdm.auto import tqdm

    cfg = cfg or DataConfig()
    out = Path(cfg.out)
    catalogue, photo_set = select_photos(cfg)
    splits = assign_splits([p["id"] for p in catalogue], tuple(cfg.split_fractions), cfg.seed)
    records: list[ImageRecord] = []
    for photo in tqdm(catalogue, desc="photos", disable=not progress):
        base = resize_max_side(load_photo(photo["loader"], cfg.max_side), cfg.max_side)
        gray = is_grayscale(base)
        variants = [("none", 0.0, base, {})]
        for kind in cfg.degradations:
            if kind == "desaturated" and gray:
                continue  # a grey photo cannot lose colour: no honest variant to make
            rng = _rng(cfg.seed, photo["id"], kind)
            strength = float(STRENGTHS[int(rng.integers(0, len(STRENGTHS)))])
            image, params = DEGRADE[kind](base, strength, rng)
            variants.append((kind, strength, image, params))
        for kind, strength, image, params in variants:
            image_id = f"{photo['id']}__{'original' if kind == 'none' else kind}"
            rel = f"images/{image_id}.png"
            data = png_bytes(image)
            atomic_write_bytes(out / rel, data)
            records.append(ImageRecord(
                id=image_id, file=rel, source_photo=photo["id"], split=splits[photo["id"]],
                sha256=hashlib.sha256(data).hexdigest(), width=image.size[0], height=image.size[1],
                source_package=photo["package"], source_name=photo["loader"], licence=photo["licence"],
                title=photo["title"], category=photo["category"], degradation=kind,
                strength=strength, params=params, traits={**photo["traits"], "grayscale": gray}))
    settings = {k: v for k, v in cfg.to_dict().items() if k != "out"}  # where it went is not what it is
    manifest = {"name": DATASET_NAME, "version": MANIFEST_VERSION, "photo_set": photo_set,
                "config": settings, "images": [r.to_dict() for r in records]}
    path = write_json(out / "manifest.json", manifest)
    log.info("wrote %d images of %d photos (photo set %s) to %s", len(records), len(catalogue), photo_set, out)
    return path


# --- reading and checking ---------------------------------------------------------------------

@dataclass
class Dataset:
    """A manifest loaded and validated: ``root`` is the folder image files are relative to."""

    root: Path
    images: list[ImageRecord]
    name: str = DATASET_NAME
    photo_set: str = ""   # e.g. full-69 or mini-16; numbers from different photo sets never compare

    def path(self, record: ImageRecord) -> Path:
        return self.root / record.file

    def by_id(self) -> dict[str, ImageRecord]:
        return {r.id: r for r in self.images}

    def split(self, split: str) -> list[ImageRecord]:
        return [r for r in self.images if r.split == split]


def load_manifest(path: str | Path, check_files: bool = True) -> Dataset:
    """Load and validate a manifest; errors name the manifest, the record and the field."""
    path = Path(path)
    data = read_json(path)
    records = manifest_records(data, str(path))
    dataset = Dataset(root=path.parent, images=records, name=data.get("name", DATASET_NAME),
                      photo_set=str(data.get("photo_set", "")))
    if check_files:
        missing = [r for r in records if not dataset.path(r).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path}: {len(missing)} listed image file(s) missing, first: {dataset.path(missing[0])}")
    return dataset


def check_image(path: str | Path, expected_sha256: str = "") -> str | None:
    """Return a one-line problem with the image file, or None when it is readable and intact."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        return "file not found"
    if path.stat().st_size == 0:
        return "empty file (zero bytes)"
    if expected_sha256 and sha256_file(path) != expected_sha256:
        return "content hash differs from the manifest"
    try:
        with Image.open(path) as im:
            if unsupported_reason(im):
                return unsupported_reason(im)
            im.load()
    except UnidentifiedImageError:
        return "not a readable image"
    except Image.DecompressionBombError as e:
        return f"not a readable image ({e})"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return f"truncated or corrupt image ({e})"
    return None


def verify_dataset(manifest: str | Path, rejects: str | Path | None = None,
                   on_error: str = "raise") -> list[dict[str, str]]:
    """Check every image of a manifest (all of them: a bad one does not stop the check). Each bad
    image is logged and, with ``rejects``, written there (JSONL). ``on_error='raise'`` then raises
    one error naming every bad image; ``'warn'`` returns them."""
    require(on_error in ("raise", "warn"), "on_error", "must be 'raise' or 'warn'")
    dataset = load_manifest(manifest, check_files=False)
    problems = []
    for record in dataset.images:
        problem = check_image(dataset.path(record), record.sha256)
        if problem:
            log.warning("%s: %s", dataset.path(record), problem)
            problems.append({"image_id": record.id, "file": str(dataset.path(record)), "problem": problem})
    if rejects is not None and problems:
        write_jsonl(rejects, problems)
    if problems and on_error == "raise":
        shown = "; ".join(f"{p['file']}: {p['problem']}" for p in problems[:20])
        raise ValueError(f"{manifest}: {len(problems)} of {len(dataset.images)} images are bad: {shown}"
                         + (f"; ... {len(problems) - 20} more" if len(problems) > 20 else ""))
    return problems


def check_splits(dataset: Dataset) -> None:
    """Raise if any source photo has images in more than one split."""
    seen: dict[str, str] = {}
    for r in dataset.images:
        if seen.setdefault(r.source_photo, r.split) != r.split:
            raise ValueError(f"source photo {r.source_photo!r} appears in splits "
                             f"{seen[r.source_photo]!r} and {r.split!r}")


def counts(dataset: Dataset):
    """Images per source package, category, split and degradation, as a DataFrame."""
    import pandas as pd

    df = pd.DataFrame([{"source_package": r.source_package, "category": r.category, "split": r.split,
                        "degradation": r.degradation, "photo": r.source_photo} for r in dataset.images])
    return df


def sheet_photos(dataset: Dataset, max_photos: int) -> list[str]:
    """Up to ``max_photos`` source photos, taken in turn from each source package (manifest order)."""
    by_package: dict[str, list[str]] = {}
    for r in dataset.images:
        group = by_package.setdefault(r.source_package, [])
        if r.source_photo not in group:
            group.append(r.source_photo)
    chosen: list[str] = []
    for rank in range(max((len(g) for g in by_package.values()), default=0)):
        chosen += [g[rank] for g in by_package.values() if rank < len(g)]
    return chosen[:max_photos]


def contact_sheet(dataset: Dataset, out_stem: str | Path, columns: int | None = None,
                  thumb_inches: float = 1.1, max_photos: int = 16) -> list[Path]:
    """A grid of thumbnails, one row per source photo, one column per degradation; PDF + PNG.
    At most ``max_photos`` rows, taken in turn from each source package."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from aes_lib.style import apply_style

    apply_style()
    n_photos = len({r.source_photo for r in dataset.images})
    photos = sheet_photos(dataset, max_photos)
    kinds = [k for k in DEGRADATIONS if any(r.degradation == k for r in dataset.images)]
    grid = {(r.source_photo, r.degradation): r for r in dataset.images}
    fig, axes = plt.subplots(len(photos), len(kinds), squeeze=False, layout="constrained",
                             figsize=(thumb_inches * len(kinds), thumb_inches * len(photos) + 0.3))
    for i, photo in enumerate(photos):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            record = grid.get((photo, kind))
            if record is not None:
                im = load_rgb(dataset.path(record))
                im.thumbnail((128, 128))
                ax.imshow(np.asarray(im))
                if kind != "none":
                    ax.set_xlabel(f"s={record.strength:g}", fontsize=8, labelpad=1)
            if i == 0:
                ax.set_title("original" if kind == "none" else kind.replace("_", " "), fontsize=8)
            if j == 0:
                split = grid[(photo, "none")].split if (photo, "none") in grid else ""
                ax.set_ylabel(f"{photo.replace('_', ' ')}\n({split})", fontsize=8, rotation=0, ha="right",
                              va="center")
    shown = f"{len(photos)} of {n_photos} photos" if len(photos) < n_photos else f"{n_photos} photos"
    set_label = f" (photo set {dataset.photo_set})" if dataset.photo_set else ""
    blank = sum((p, k) not in grid for p in photos for k in kinds)
    fig.suptitle(f"{dataset.name}{set_label}: {shown} in up to {len(kinds)} versions, "
                 f"{len(dataset.images)} images in all"
                 + (f" ({blank} blank cells: a version not made for that photo, e.g. no desaturated "
                    "copy of a grey photo)" if blank else "")
                 + "; s = degradation strength (1 = strongest)", fontsize=9)
    from aes_lib.style import save_figure

    # an overview at about the thumbnails' own size, in 256 colours: a few hundred KB instead of
    # megabytes; the images themselves, unaltered, are the files under images/
    paths = save_figure(fig, out_stem, dpi=100)
    plt.close(fig)
    return paths


# --- CLI --------------------------------------------------------------------------------------

def register_cli(sub) -> None:
    p = sub.add_parser("data", help="build and check AesMMIT-mini")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    b = dsub.add_parser("build", help="write images and manifest.json (byte-identical on rebuild)")
    b.add_argument("--out", default=DataConfig.out, help="output folder (default: %(default)s)")
    b.add_argument("--max-side", type=int, default=256, help="longest side in pixels (default: 256)")
    b.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    b.add_argument("--photos", nargs="*", default=[], help="photo ids to use (default: the photo set)")
    b.add_argument("--photo-set", default="auto", choices=PHOTO_SET_CHOICES,
                   help="auto: full where its Debian packages are installed, else mini (default: auto)")
    b.set_defaults(func=_cli_build)
    v = dsub.add_parser("verify", help="check every image of a manifest")
    v.add_argument("manifest", help="path to manifest.json")
    v.add_argument("--rejects", help="write problems to this JSONL file and go on instead of stopping")
    v.set_defaults(func=_cli_verify)
    ls = dsub.add_parser("photos", help="list the source photos with package and licence")
    ls.add_argument("--packages", action="store_true",
                    help="print only the Debian packages the full photo set needs, one per line")
    ls.set_defaults(func=_cli_photos)


def _cli_build(args) -> int:
    cfg = DataConfig.from_dict(out=args.out, max_side=args.max_side, seed=args.seed, photos=args.photos,
                               photo_set=args.photo_set)
    path = build_dataset(cfg)
    dataset = load_manifest(path)
    n_photos = len({r.source_photo for r in dataset.images})
    print(f"{len(dataset.images)} images written ({n_photos} photos, photo set {dataset.photo_set}); "
          f"manifest: {path}")
    return 0


def _cli_verify(args) -> int:
    """Exit 0 when every image is intact, 1 when any is bad (each printed), 2 on a bad manifest."""
    problems = verify_dataset(args.manifest, rejects=args.rejects, on_error="warn")
    dataset = load_manifest(args.manifest, check_files=False)
    check_splits(dataset)
    for p in problems:
        print(f"BAD {p['file']}: {p['problem']}")
    print(f"{len(dataset.images) - len(problems)} of {len(dataset.images)} images OK"
          + (f"; {len(problems)} bad" if problems else "")
          + (f", written to {args.rejects}" if problems and args.rejects else ""))
    return 1 if problems else 0


def _cli_photos(args) -> int:
    catalogue = load_photo_catalogue()["photos"]
    if args.packages:
        print("\n".join(system_packages(catalogue)))
        return 0
    missing = {p["id"] for p in missing_system_photos(catalogue)}
    for p in catalogue:
        where = "pip" if not is_system_photo(p) else "debian, not installed" if p["id"] in missing else "debian"
        print(f"{p['id']:20s} {p['package']:27s} {where:22s} {p['licence']}")
    return 0
