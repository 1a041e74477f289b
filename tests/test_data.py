import json
import shutil
from collections import defaultdict

import pytest

from aes_lib.data import (DataConfig, assign_splits, build_dataset, check_splits, contact_sheet,
                          load_manifest, load_photo_catalogue, verify_dataset)
from aes_lib.io import hash_tree
from aes_lib.schema import SchemaError

from conftest import TEST_PHOTOS


def test_catalogue_has_fifteen_or_more_photos_with_licences():
    photos = load_photo_catalogue()["photos"]
    assert len(photos) >= 15
    assert len({p["id"] for p in photos}) == len(photos)
    for p in photos:
        assert p["licence"] and p["package"] in {"scikit-image", "scikit-learn", "matplotlib"}
        assert {"subject", "mood", "palette", "composition", "base_grade"} <= set(p["traits"])


def test_every_photo_loads_offline():
    from aes_lib.data import load_photo

    for p in load_photo_catalogue()["photos"]:
        image = load_photo(p["loader"])
        assert image.mode == "RGB" and min(image.size) >= 100


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


def test_contact_sheet_is_deterministic(mini_dataset, tmp_path):
    dataset = load_manifest(mini_dataset)
    first = contact_sheet(dataset, tmp_path / "a" / "sheet")
    second = contact_sheet(dataset, tmp_path / "b" / "sheet")
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
