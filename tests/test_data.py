import json
import shutil
from collections import defaultdict

import pytest

from aes_lib import data
from aes_lib.data import (DataConfig, assign_splits, build_dataset, check_splits, contact_sheet,
                          load_manifest, load_photo_catalogue, verify_dataset)
from aes_lib.io import hash_tree
from aes_lib.schema import GRADES, SchemaError

from conftest import REPO, TEST_PHOTOS


PIP_PACKAGES = {"scikit-image", "scikit-learn", "matplotlib"}
DEBIAN_INSTALLED = not data.missing_system_photos()
needs_debian_photos = pytest.mark.skipif(
    not DEBIAN_INSTALLED, reason="the full photo set's Debian packages are not installed (`make photos`)")


def test_catalogue_has_sixty_or_more_photos_with_licences_and_traits():
    photos = load_photo_catalogue()["photos"]
    assert len(photos) >= 60
    assert len({p["id"] for p in photos}) == len(photos)
    assert len({p["loader"] for p in photos}) == len(photos)  # no photo listed twice
    for p in photos:
        assert p["licence"] and p["title"] and p["category"]
        assert {"subject", "mood", "palette", "composition", "base_grade", "interest"} <= set(p["traits"])
        assert p["traits"]["base_grade"] in GRADES
        if data.is_system_photo(p):
            assert p["package"] not in PIP_PACKAGES and data.system_photo_path(p).is_absolute()
        else:
            assert p["package"] in PIP_PACKAGES


def test_the_mini_set_is_the_sixteen_pip_photos_and_the_full_set_has_twelve_test_photos():
    photos = load_photo_catalogue()["photos"]
    mini = [p for p in photos if not data.is_system_photo(p)]
    assert len(mini) == 16
    splits = assign_splits([p["id"] for p in photos], tuple(DataConfig().split_fractions), seed=0)
    assert sorted(splits.values()).count("test") >= 12 and sorted(splits.values()).count("val") >= 12


def test_makefile_installs_exactly_the_debian_packages_the_catalogue_needs():
    makefile = (REPO / "Makefile").read_text()
    line = next(l for l in makefile.splitlines() if l.startswith("PHOTO_PACKAGES"))
    assert sorted(line.split(":=", 1)[1].split()) == data.system_packages()


def test_every_pip_photo_loads_offline():
    for p in load_photo_catalogue()["photos"]:
        if not data.is_system_photo(p):
            image = data.load_photo(p["loader"])
            assert image.mode == "RGB" and min(image.size) >= 100


@needs_debian_photos
def test_every_debian_photo_loads_from_its_package():
    for p in load_photo_catalogue()["photos"]:
        if data.is_system_photo(p):
            image = data.load_photo(p["loader"], max_side=64)
            assert image.mode == "RGB" and min(image.size) >= 128, p["id"]


def _fake_missing(monkeypatch, which):
    """Pretend the Debian photos ``which`` selects are not installed."""
    catalogue = load_photo_catalogue()["photos"]
    gone = [p for p in catalogue if data.is_system_photo(p) and which(p)]
    monkeypatch.setattr(data, "missing_system_photos", lambda catalogue=None: gone)
    return gone


def test_auto_photo_set_is_full_when_installed_and_mini_without_the_packages(monkeypatch, caplog):
    photos = load_photo_catalogue()["photos"]
    _fake_missing(monkeypatch, lambda p: False)
    chosen, name = data.select_photos(DataConfig())
    assert name == f"full-{len(photos)}" and chosen == photos
    _fake_missing(monkeypatch, lambda p: True)
    with caplog.at_level("WARNING"):
        chosen, name = data.select_photos(DataConfig())
    assert name == "mini-16" and not any(map(data.is_system_photo, chosen))
    assert "make photos" in caplog.text  # says how to get the full set


def test_a_half_installed_photo_set_is_an_error_naming_the_package(monkeypatch):
    gone = _fake_missing(monkeypatch, lambda p: p["package"] == "opencv-doc")
    with pytest.raises(FileNotFoundError, match="opencv-doc") as err:
        data.select_photos(DataConfig())
    assert str(data.system_photo_path(gone[0])) in str(err.value)


def test_named_photos_make_a_custom_set_and_photo_set_mini_needs_no_debian_package(monkeypatch):
    assert data.select_photos(DataConfig.from_dict(photos=TEST_PHOTOS))[1] == "custom-8"
    _fake_missing(monkeypatch, lambda p: True)
    chosen, name = data.select_photos(DataConfig.from_dict(photo_set="mini"))
    assert name == "mini-16" and len(chosen) == 16
    with pytest.raises(Exception, match="photo_set"):
        DataConfig.from_dict(photo_set="everything")


def test_a_missing_debian_photo_file_is_named_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make photos") as err:
        data.load_photo(f"debian:{tmp_path / 'gone.jpg'}")
    assert "gone.jpg" in str(err.value)


def test_the_manifest_names_its_photo_set(mini_dataset):
    assert json.loads(mini_dataset.read_text())["photo_set"] == "custom-8"
    assert load_manifest(mini_dataset).photo_set == "custom-8"


@needs_debian_photos
def test_debian_photos_build_byte_identically_with_licence_and_package(tmp_path):
    ids = ["aqua", "by_the_water", "fig_bowl", "nuthatch", "robin"]
    cfg = dict(max_side=48, photos=ids, degradations=["blur", "noise"])
    build_dataset(DataConfig.from_dict(out=str(tmp_path / "a"), **cfg), progress=False)
    build_dataset(DataConfig.from_dict(out=str(tmp_path / "b"), **cfg), progress=False)
    assert hash_tree(tmp_path / "a") == hash_tree(tmp_path / "b")
    dataset = load_manifest(tmp_path / "a" / "manifest.json")
    catalogue = {p["id"]: p for p in load_photo_catalogue()["photos"]}
    assert {r.source_photo for r in dataset.images} == set(ids) and len(dataset.images) == 15
    for r in dataset.images:
        assert r.licence == catalogue[r.source_photo]["licence"]
        assert r.source_package == catalogue[r.source_photo]["package"] not in PIP_PACKAGES
        assert max(r.width, r.height) == 48


def test_variants_record_ground_truth(mini_dataset):
    dataset = load_manifest(mini_dataset)
    by_photo = defaultdict(set)
    for r in dataset.images:
        by_photo[r.source_photo].add(r.degradation)
        assert (r.degradation == "none") == (r.strength == 0.0)
        assert r.licence and r.source_package and r.sha256
    assert set(by_photo) == set(TEST_PHOTOS)
    for photo, kinds in by_photo.items():
        assert {"none", "blur", "overexposed", "underexposed", "noise", "jpeg", "tilted"} <= kinds
    blur = next(r for r in dataset.images if r.degradation == "blur")
    assert blur.params["gaussian_radius_px"] > 1


def test_degradations_change_pixels_in_the_recorded_direction(mini_dataset):
    import numpy as np
    from PIL import Image

    dataset = load_manifest(mini_dataset)
    images = {r.id: np.asarray(Image.open(dataset.path(r)), dtype=float) for r in dataset.images}
    for photo in TEST_PHOTOS:
        base = images[f"{photo}__original"]
        assert images[f"{photo}__overexposed"].mean() > base.mean() + 10
        assert images[f"{photo}__underexposed"].mean() < base.mean() - 10
        # blur removes fine detail: smaller mean absolute horizontal gradient
        grad = lambda a: np.abs(np.diff(a, axis=1)).mean()
        assert grad(images[f"{photo}__blur"]) < grad(base)


def test_splits_are_disjoint_by_source_photo(mini_dataset):
    dataset = load_manifest(mini_dataset)
    check_splits(dataset)
    photos_by_split = defaultdict(set)
    for r in dataset.images:
        photos_by_split[r.split].add(r.source_photo)
    assert set(photos_by_split) == {"train", "val", "test"}
    splits = list(photos_by_split.values())
    for i in range(3):
        for j in range(i + 1, 3):
            assert not splits[i] & splits[j]


def test_check_splits_catches_a_leak(mini_dataset, tmp_path):
    data = json.loads(mini_dataset.read_text())
    first = data["images"][0]
    leaked = next(r for r in data["images"] if r["source_photo"] == first["source_photo"] and r is not first)
    leaked["split"] = "test" if first["split"] != "test" else "train"
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=first["source_photo"]):
        check_splits(load_manifest(path, check_files=False))


def test_assign_splits_is_deterministic_and_complete():
    ids = [f"p{i}" for i in range(16)]
    a, b = assign_splits(ids, seed=3), assign_splits(ids, seed=3)
    assert a == b and set(a) == set(ids)
    assert sorted(a.values()).count("test") == 3


def test_rebuild_is_byte_identical(tmp_path, mini_dataset):
    cfg = DataConfig.from_dict(out=str(tmp_path / "again"), max_side=64, photos=TEST_PHOTOS)
    build_dataset(cfg, progress=False)
    assert hash_tree(tmp_path / "again") == hash_tree(mini_dataset.parent)


def test_contact_sheet_rows_take_photos_in_turn_from_each_package(mini_dataset):
    dataset = load_manifest(mini_dataset)
    package = {r.source_photo: r.source_package for r in dataset.images}
    chosen = data.sheet_photos(dataset, max_photos=3)
    assert len(chosen) == 3 and len({package[c] for c in chosen}) == 3  # skimage, sklearn, matplotlib
    assert sorted(data.sheet_photos(dataset, max_photos=99)) == sorted(package)


def test_contact_sheet_is_deterministic(mini_dataset, tmp_path):
    dataset = load_manifest(mini_dataset)
    first = contact_sheet(dataset, tmp_path / "a" / "sheet")
    second = contact_sheet(dataset, tmp_path / "b" / "sheet")
    assert len(first) == len(second) == 2   # the PDF and the PNG: the loop below compares both
    for p, q in zip(first, second):
        assert p.stat().st_size > 1000 and p.read_bytes() == q.read_bytes()


@pytest.fixture
def damaged_copy(mini_dataset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(mini_dataset.parent, root)
    return root / "manifest.json"


def test_missing_file_is_named(damaged_copy):
    dataset = load_manifest(damaged_copy)
    victim = dataset.path(dataset.images[3])
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        load_manifest(damaged_copy)


def test_truncated_image_raises_naming_the_file(damaged_copy):
    dataset = load_manifest(damaged_copy)
    victim = dataset.path(dataset.images[5])
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(ValueError, match=victim.name):
        verify_dataset(damaged_copy)


def test_bad_images_warn_and_go_to_rejects(damaged_copy, tmp_path):
    dataset = load_manifest(damaged_copy)
    dataset.path(dataset.images[1]).write_bytes(b"this is not a png")
    truncated = dataset.path(dataset.images[2])
    truncated.write_bytes(truncated.read_bytes()[:300])
    rejects = tmp_path / "rejects.jsonl"
    problems = verify_dataset(damaged_copy, rejects=rejects, on_error="warn")
    assert {p["image_id"] for p in problems} == {dataset.images[1].id, dataset.images[2].id}
    assert len(rejects.read_text().splitlines()) == 2


def test_manifest_with_wrong_field_names_record_and_field(damaged_copy):
    data = json.loads(damaged_copy.read_text())
    data["images"][4]["split"] = "holdout"
    damaged_copy.write_text(json.dumps(data))
    with pytest.raises(SchemaError) as e:
        load_manifest(damaged_copy)
    assert "images[4]" in str(e.value) and e.value.field_name == "split"


def test_config_rejects_unknown_degradation():
    from aes_lib.config import ConfigError

    with pytest.raises(ConfigError, match="degradations"):
        DataConfig.from_dict(degradations=["sepia"])
    with pytest.raises(ConfigError, match="colour"):
        DataConfig.from_dict(colour=1)
