"""The small pretrained LLaVA: built from installed packages, reloaded with from_pretrained, one
training step, one scored item; its vision tower's ImageNet weights; stage-1 data; the cloze form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aes_lib.schema import BenchItem, ImageRecord

pytestmark = pytest.mark.slow


def _photo(path: Path, seed: int, size=(96, 80)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(base).resize(size, Image.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A built small LLaVA (tokens standardised on four images) and its image folder."""
    from aes_lib.models import build_small_llava

    root = tmp_path_factory.mktemp("small")
    images = [_photo(root / "data" / "images" / f"im{i}.png", i) for i in range(4)]
    build_small_llava(root / "model", seed=0, norm_images=images)
    return root


def test_built_folder_reloads_with_from_pretrained_and_holds_the_packages_weights(small):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import aes_lib.vision  # noqa: F401  (registers the tower with the Auto classes)
    from aes_lib import vision
    from aes_lib.models import gguf_path

    folder = small / "model"
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(model.model.vision_tower).__name__ == "EfficientNetLiteVisionModel"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 150e6
    # the vision tower holds the package's ImageNet weights, not a fresh init
    state = torch.load(vision.weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.model.vision_tower._conv_head.weight, state["_conv_head.weight"])
    assert torch.equal(model.model.vision_tower._blocks[7]._bn1.running_var, state["_blocks.7._bn1.running_var"])
    # the token standardisation was fitted (not the identity) and survives the reload
    assert not torch.all(model.model.vision_tower.token_std == 1)
    # the language model is SmolLM2's: its output embedding is tied to the input one
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    tok = processor.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert gguf_path().name.endswith(".gguf")
    info = json.loads((folder / "build_info.json").read_text())
    assert info["image_tokens"] == 5 and info["token_norm_images"] == 4
    assert "Apache-2.0" == info["parts"]["language_model"]["licence"] == info["parts"]["vision_tower"]["licence"]
    # five image tokens; the pretrained language model answers a plain question sensibly
    from aes_lib.models import build_prompt, load_processor

    processor = load_processor(folder)
    prompt = build_prompt(processor, [{"from": "human", "value": "<image>\nWhat is the capital of France? "
                                                                 "Answer in one word."}])
    assert prompt.startswith("<|im_start|>user\n<image>\n") and prompt.endswith("<|im_start|>assistant\n")
    inputs = processor(images=Image.open(small / "data/images/im0.png").convert("RGB"), text=prompt,
                       return_tensors="pt")
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == model.config.image_seq_length == 5
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, inputs["input_ids"].shape[1]:])


def test_the_image_reaches_the_language_model(small):
    import torch

    from aes_lib.models import build_prompt, load_model_and_processor

    model, processor = load_model_and_processor(small / "model")
    prompt = build_prompt(processor, [{"from": "human", "value": "<image>\nDescribe this photo."}])
    logits = []
    for i in (0, 1):
        enc = processor(images=Image.open(small / f"data/images/im{i}.png").convert("RGB"), text=prompt,
                        return_tensors="pt")
        with torch.no_grad():
            logits.append(model(**enc).logits[0, -1])
    assert (logits[0] - logits[1]).abs().max() > 1e-3


def test_one_training_step_and_one_scored_item_in_both_forms(small, tmp_path):
    from aes_lib.evaluate.answer import answer_local
    from aes_lib.models import load_model_and_processor
    from aes_lib.train import TrainConfig, train

    data = small / "data"
    mcq = ("<image>\nIs this photo blurry?\nChoose one from the following options:\nA. No\nB. Yes\n"
           "Answer with the option's letter from the given choices directly.")
    records = [{"id": f"r{i}", "image": f"images/im{i}.png", "type": "perception_mcq",
                "conversations": [{"from": "human", "value": mcq}, {"from": "gpt", "value": "A. No"}]}
               for i in range(4)]
    train_file, val_file = tmp_path / "train.json", tmp_path / "val.json"
    train_file.write_text(json.dumps(records))
    val_file.write_text(json.dumps(records[:2]))
    cfg = TrainConfig.from_dict(dict(   # bf16 as the cpu profile: samples generated before and after too
        model=str(small / "model"), train_file=str(train_file), val_file=str(val_file), image_root=str(data),
        output_dir=str(tmp_path / "run"), lora_r=4, lora_alpha=8, lora_targets=["q_proj", "v_proj"],
        lr=1e-3, projector_lr=1e-3, max_steps=1, global_batch_size=4, micro_batch_size=4, max_length=128,
        mcq_form="both", n_samples=1, sample_max_new_tokens=2, merge=False, progress=False, precision="bf16"))
    summary = train(cfg)
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    assert summary["steps_done"] == 1 and np.isfinite(summary["last_loss"])
    assert stats["n_records"] == 8 and stats["n_kept"] == 8   # each record in the letter and cloze form
    assert summary["precision"] == "bf16" and len(json.loads((tmp_path / "run" / "samples.json").read_text())) == 1
    assert json.loads((tmp_path / "run" / "adapter" / "input_format.json").read_text())["conversation"] == "checkpoint"

    model, processor = load_model_and_processor(small / "model", adapter=tmp_path / "run" / "adapter")
    item = BenchItem(id="x:AesP:technical_quality:yes-no", image="images/im1.png", dimension="AesP",
                     question="Is this photo blurry?", options=["No", "Yes"], answer="A",
                     attribute="technical_quality", qtype="yes-no", source="s")
    letter = answer_local([item], model, processor, data, mode="first-token")[0]
    cloze = answer_local([item], model, processor, data, mode="cloze")[0]
    assert letter["method"] == "likelihood:first-token:sum" and letter["response"] in ("A. No", "B. Yes")
    assert cloze["method"] == "likelihood:cloze:mean" and cloze["response"] in ("No", "Yes")
    assert len(cloze["scores"]) == 2 and all(s < 0 for s in cloze["scores"])


def test_vision_tower_classifies_imagenet_photos():
    """The hand-written network with the package's weights is EfficientNet-Lite0: a cat is a cat."""
    import torch
    from skimage import data

    from aes_lib import vision

    net = vision.load_imagenet_weights(vision.EfficientNetLiteVisionModel(vision.EfficientNetLiteConfig()),
                                       keep_classifier=True).eval()
    cats, cups = range(281, 286), (967, 968)   # tabby ... Egyptian cat; espresso, cup
    for photo, wanted in ((data.chelsea(), cats), (data.coffee(), cups)):
        im = Image.fromarray(photo).convert("RGB").resize((224, 224))
        x = (torch.tensor(np.asarray(im) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None] - 0.5) / 0.5
        with torch.no_grad():
            assert int(net.classify(x).argmax()) in wanted


def test_token_norm_standardises_the_fitted_images():
    import torch

    from aes_lib import vision

    net = vision.EfficientNetLiteVisionModel(vision.EfficientNetLiteConfig(image_size=64, grid=2))
    vision.load_imagenet_weights(net)
    x = torch.randn(6, 3, 64, 64)
    raw = net(x).last_hidden_state
    assert net.fit_token_norm([x[:3], x[3:]]) == 6
    tokens = net(x).last_hidden_state.flatten(0, 1)
    assert raw.shape == (6, 5, vision.TOKEN_WIDTH)
    assert tokens.mean(0).abs().max() < 1e-3
    std = tokens.std(0, unbiased=False).detach()
    assert abs(float(std.median()) - 1) < 0.02 and float(std.max()) <= 1.0001
    with pytest.raises(ValueError, match="at least two"):
        net.fit_token_norm([x[:1]])


def test_frozen_batch_norm_ignores_training_mode():
    import torch

    from aes_lib import vision

    net = vision.load_imagenet_weights(vision.EfficientNetLiteVisionModel(vision.EfficientNetLiteConfig()))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a = net.eval()(x).last_hidden_state
        b = net.train()(x).last_hidden_state
    assert torch.equal(a, b)


# --- stage 1 data and the cloze form ---------------------------------------------------------------

def _records(split_of: dict[str, str]) -> list[ImageRecord]:
    traits = {"cat": ("a tabby cat", "animal"), "cup": ("a cup of coffee", "object"),
              "hill": ("a green hill", "nature"), "town": ("a small town", "scene"),
              "held": ("a held-out subject", "portrait")}
    out = []
    for photo, split in split_of.items():
        subject, category = traits[photo]
        for variant in ("original", "blur"):
            out.append(ImageRecord(id=f"{photo}__{variant}", file=f"images/{photo}__{variant}.png",
                                   source_photo=photo, split=split, category=category,
                                   degradation="none" if variant == "original" else "blur",
                                   traits={"subject": subject, "mood": "calm", "palette": "warm browns"}))
    return out


def test_content_records_name_only_the_splits_photos_and_no_aesthetics():
    from aes_lib.train.alignment import content_records
    from aes_lib.train.data import cloze_form

    images = _records({"cat": "train", "cup": "train", "hill": "train", "town": "train", "held": "test"})
    records = content_records(images, "train", seed=0)
    assert records == content_records(images, "train", seed=0)          # deterministic
    assert records != content_records(images, "train", seed=1)
    assert {r["image"] for r in records} == {im.file for im in images if im.split == "train"}
    text = json.dumps([r["conversations"] for r in records]).lower()   # what the model reads
    assert "held-out subject" not in text                                # nothing from another split
    for word in ("blur", "calm", "warm", "quality", "aesthetic", "composition", "colour", "color"):
        assert word not in text, word
    kinds = {r["id"].rsplit(":", 1)[1] for r in records}
    assert kinds == {"describe", "subject", "yes-no", "category"}
    for r in records:
        subject = next(im.traits["subject"] for im in images if im.file == r["image"])
        if r["id"].endswith(":subject"):
            assert cloze_form(r["conversations"])[1]["value"] == subject
        if r["id"].endswith(":describe"):
            assert subject in r["conversations"][1]["value"]
    with pytest.raises(ValueError, match="split 'val'"):
        content_records(images, "val")


def test_cloze_form_and_mcq_forms():
    from aes_lib.train.data import apply_mcq_form, cloze_form

    mcq = [{"from": "human", "value": "<image>\nWhat is wrong?\nChoose one from the following options:\n"
                                      "A. it is tilted\nB. nothing\nAnswer with the option's letter from "
                                      "the given choices directly."},
           {"from": "gpt", "value": "B. nothing"}]
    assert cloze_form(mcq) == [{"from": "human", "value": "<image>\nWhat is wrong?"},
                               {"from": "gpt", "value": "nothing"}]
    wrong_text = [mcq[0], {"from": "gpt", "value": "B. something else"}]
    assert cloze_form(wrong_text) is None and cloze_form(mcq[:1] + mcq) is None
    open_rec = {"id": "o", "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                             {"from": "gpt", "value": "A photo."}]}
    recs = [{"id": "m", "conversations": mcq}, open_rec]
    assert apply_mcq_form(recs, "letter") == recs
    assert [r["id"] for r in apply_mcq_form(recs, "both")] == ["m", "m:cloze", "o"]
    cloze = apply_mcq_form(recs, "cloze")
    assert [r["id"] for r in cloze] == ["m", "o"] and cloze[0]["conversations"][1]["value"] == "nothing"
    with pytest.raises(ValueError, match="mcq_form"):
        apply_mcq_form(recs, "letters")


def test_degradation_scores_are_one_minus_strength(tmp_path):
    from aes_lib.evaluate.tables import write_degradation_scores

    recs = [{"id": f"p__{k}", "file": f"images/p__{k}.png", "source_photo": "p", "split": split,
             "degradation": k, "strength": s}
            for k, s, split in (("original", 0.0, "test"), ("blur", 0.75, "test"), ("noise", 0.5, "train"))]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text(json.dumps({"version": 1, "images": recs}))
    rows = json.loads(write_degradation_scores(tmp_path).read_text())
    assert rows == [{"image": "images/p__original.png", "gt_score": 1.0},
                    {"image": "images/p__blur.png", "gt_score": 0.25}]


def test_degradation_verdict_names_what_was_and_was_not_beaten():
    import pandas as pd

    from aes_lib.evaluate.tables import degradation_verdict

    def rows(model, lows):
        return [{"comparison": f"{model} - {other}", "difference": low + 0.05, "ci_low": low, "ci_high": low + 0.1}
                for other, low in zip(("base", f"{model}:shuffled-images", "blind-prior"), lows)]

    table = pd.DataFrame(rows("finetuned", (0.02, 0.01, 0.03)) + rows("finetuned-cloze", (0.02, 0.01, -0.2))
                         + rows("tiny-finetuned", (0.02, -0.01, 0.03)))
    seeing, partly, blind = degradation_verdict(table)
    assert seeing.startswith("finetuned:") and "beats every comparison" in seeing
    assert "uses the image" in partly and "does not beat blind-prior" in partly and "base" not in partly.split("->")[1]
    assert "no sign that it uses the image" in blind


def test_one_process_trains_in_bf16_then_in_fp32(tmp_path):
    """Notebook 03 trains the small model in bf16, then the tiny contrast in fp32, in one kernel."""
    from aes_lib.models import build_tiny_llava
    from aes_lib.train import TrainConfig, train

    data = tmp_path / "data"
    records = [{"id": f"r{i}", "image": _photo(data / f"images/im{i}.png", i).relative_to(data).as_posix(),
                "conversations": [{"from": "human", "value": "<image>\nIs it dark?"},
                                  {"from": "gpt", "value": "No."}]} for i in range(4)]
    (tmp_path / "train.json").write_text(json.dumps(records))
    build_tiny_llava(tmp_path / "tiny", corpus_texts=["Is it dark? No."], seed=0)
    for precision in ("bf16", "fp32"):
        summary = train(TrainConfig.from_dict(dict(
            model=str(tmp_path / "tiny"), train_file=str(tmp_path / "train.json"), val_file="",
            image_root=str(data), output_dir=str(tmp_path / precision), max_steps=1, global_batch_size=4,
            micro_batch_size=4, lora_r=4, lora_alpha=8, n_samples=0, merge=False, progress=False,
            precision=precision)))
        assert summary["precision"] == precision


def test_the_radar_shows_letter_format_runs_and_their_controls_only():
    from aes_lib.report.build import letter_format_only

    measured = {n: {} for n in ("base", "finetuned", "finetuned:shuffled-images", "blind-prior", "base-cloze",
                                "finetuned-cloze:shuffled-images", "tiny-finetuned-generate", "tiny-base")}
    assert list(letter_format_only(measured)) == ["base", "finetuned", "finetuned:shuffled-images",
                                                  "blind-prior", "tiny-base"]
