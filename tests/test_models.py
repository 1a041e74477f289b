"""Tests of aes_lib.models: the tiny LLaVA, loading, prompts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aes_lib.io import hash_tree
from aes_lib.models import build_prompt, build_tiny_llava, load_model_and_processor, to_messages

CONV = [{"from": "human", "value": "<image>\nIs the image blurry?"},
        {"from": "gpt", "value": "Yes, it is blurry."},
        {"from": "human", "value": "Why?"},
        {"from": "gpt", "value": "The edges are soft."}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny") / "m", corpus_texts=["a blurry cat"], seed=0)


def test_build_is_deterministic(tiny, tmp_path):
    again = build_tiny_llava(tmp_path / "m2", corpus_texts=["a blurry cat"], seed=0)
    assert hash_tree(tiny) == hash_tree(again)
    other = build_tiny_llava(tmp_path / "m3", corpus_texts=["a blurry cat"], seed=1)
    assert hash_tree(other)["model.safetensors"] != hash_tree(tiny)["model.safetensors"]


def test_reload_through_auto_classes_and_forward(tiny):
    import torch

    model, processor = load_model_and_processor(tiny)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert 0.3e6 < sum(p.numel() for p in model.parameters()) < 2e6
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (70, 90, 3), dtype=np.uint8))
    inputs = processor(images=img, text=build_prompt(processor, CONV[:1]), return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids[0] == processor.tokenizer.bos_token_id
    assert ids.count(processor.image_token_id) == model.config.image_seq_length == 16
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, len(ids), len(processor.tokenizer))
    # a second load gives bit-identical logits (nothing random at load time)
    model2, _ = load_model_and_processor(tiny)
    with torch.no_grad():
        assert torch.equal(model2(**inputs).logits, logits)


#: LLaVA's system prompts, verbatim from llava/conversation.py (conv_vicuna_v1, conv_llava_v1)
VICUNA_V1 = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
             "gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_V1 = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
            "gives helpful, detailed, and polite answers to the human's questions.")


def test_build_prompt_llava_v1(tiny):
    _, processor = load_model_and_processor(tiny)   # the default: LLaVA-1.5's v1 conversation
    assert build_prompt(processor, CONV[:1]) == VICUNA_V1 + " USER: <image>\nIs the image blurry? ASSISTANT:"
    assert build_prompt(processor, CONV, add_generation_prompt=False) == VICUNA_V1 + (
        " USER: <image>\nIs the image blurry? ASSISTANT: Yes, it is blurry.</s>"
        "USER: Why? ASSISTANT: The edges are soft.</s>")
    with pytest.raises(ValueError, match="end with a human turn"):
        build_prompt(processor, CONV[:2])
    # a system turn of the conversation replaces the default system prompt
    own = [{"from": "system", "value": "Judge photos."}] + CONV[:1]
    assert build_prompt(processor, own) == "Judge photos. USER: <image>\nIs the image blurry? ASSISTANT:"


def test_conversation_choices_render_llavas_strings(tiny):
    from aes_lib.models import SYSTEM_PROMPTS

    assert SYSTEM_PROMPTS == {"v1": VICUNA_V1, "llava_v1": LLAVA_V1}
    _, processor = load_model_and_processor(tiny, conversation="llava_v1")
    assert build_prompt(processor, CONV[:3]) == LLAVA_V1 + (
        " USER: <image>\nIs the image blurry? ASSISTANT: Yes, it is blurry.</s>USER: Why? ASSISTANT:")
    # 'checkpoint' keeps the checkpoint's own template: the tiny model's has no system prompt (as llava-hf's)
    _, processor = load_model_and_processor(tiny, conversation="checkpoint")
    assert build_prompt(processor, CONV[:1]) == "USER: <image>\nIs the image blurry? ASSISTANT:"
    with pytest.raises(ValueError, match="conversation.*vicuna"):
        load_model_and_processor(tiny, conversation="vicuna")


def _edge_image() -> Image.Image:
    """80 x 40 green photo with a red left edge and a blue right edge (4 px each)."""
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :, 1] = 200
    arr[:, :4] = (255, 0, 0)
    arr[:, -4:] = (0, 0, 255)
    return Image.fromarray(arr)


def test_pad_keeps_the_whole_image_and_pads_in_the_mean_colour(tiny):
    from aes_lib.models import load_processor

    pad = load_processor(tiny)                       # the default image mode
    crop = load_processor(tiny, image_mode="crop")
    ip = pad.image_processor
    mean, std = np.array(ip.image_mean), np.array(ip.image_std)
    fill = (np.array([int(255 * m) for m in mean]) / 255 - mean) / std   # LLaVA's expand2square colour
    px = pad.image_processor(images=_edge_image(), return_tensors="np")["pixel_values"][0]  # [3, 64, 64]
    assert px.shape == (3, 64, 64)
    # 80 x 40 padded to 80 x 80: the top and bottom 20 of 80 rows (16 of 64) are the fill colour
    # (the resize blends the 2-3 rows next to the photo)
    for rows in (px[:, :12], px[:, -12:]):
        assert np.allclose(rows, fill[:, None, None], atol=1e-5)
    middle = px[:, 20:44]
    red = (np.array([1.0, 0, 0]) - mean) / std
    blue = (np.array([0, 0, 1.0]) - mean) / std
    assert np.allclose(middle[:, :, 0], red[:, None], atol=0.05)      # the left edge is still there
    assert np.allclose(middle[:, :, -1], blue[:, None], atol=0.05)    # and so is the right one
    # centre-cropping (the option) cuts both edges away and has no fill
    cx = crop.image_processor(images=_edge_image(), return_tensors="np")["pixel_values"][0]
    green = (np.array([0, 200 / 255, 0]) - mean) / std
    assert np.allclose(cx[:, :, 0], green[:, None], atol=0.05) and np.allclose(cx[:, :, -1], green[:, None], atol=0.05)
    # the full processor call (what training and evaluation use) pads too
    full = pad(images=_edge_image(), text=build_prompt(pad, CONV[:1]), return_tensors="np")["pixel_values"][0]
    assert np.array_equal(full, px)


def test_input_format_is_saved_and_read_back(tiny, tmp_path):
    from aes_lib.models import (INPUT_FORMAT_FILE, input_format_of, load_processor, read_input_format,
                                save_processor)

    assert input_format_of(load_processor(tiny)) == {"image_mode": "pad", "conversation": "v1"}
    chosen = load_processor(tiny, image_mode="crop", conversation="llava_v1")
    save_processor(chosen, tmp_path / "saved")
    assert read_input_format(tmp_path / "saved") == {"image_mode": "crop", "conversation": "llava_v1"}
    # a folder that records a format gets it back without arguments; arguments still win
    again = load_processor(tmp_path / "saved")
    assert input_format_of(again) == {"image_mode": "crop", "conversation": "llava_v1"}
    assert build_prompt(again, CONV[:1]).startswith(LLAVA_V1)
    assert input_format_of(load_processor(tmp_path / "saved", image_mode="pad"))["image_mode"] == "pad"
    (tmp_path / "saved" / INPUT_FORMAT_FILE).write_text('{"image_mode": "stretch", "conversation": "v1"}')
    with pytest.raises(ValueError, match="input_format.json"):
        load_processor(tmp_path / "saved")


def test_to_messages_moves_image_first_and_rejects_bad_turns():
    msgs = to_messages([{"from": "human", "value": "Look:\n<image>"}])
    assert msgs == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Look:"}]}]
    with pytest.raises(ValueError, match=r"conversations\[0\].from"):
        to_messages([{"from": "robot", "value": "x"}])


def test_load_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model_and_processor(tmp_path / "nope")


def test_relative_missing_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="outputs/train/run/merged"):
        load_model_and_processor("outputs/train/run/merged")
