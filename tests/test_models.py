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


def test_build_prompt_llava_v1(tiny):
    _, processor = load_model_and_processor(tiny)
    assert build_prompt(processor, CONV[:1]) == "USER: <image>\nIs the image blurry? ASSISTANT:"
    assert build_prompt(processor, CONV, add_generation_prompt=False) == (
        "USER: <image>\nIs the image blurry? ASSISTANT: Yes, it is blurry.</s>"
        "USER: Why? ASSISTANT: The edges are soft.</s>")
    with pytest.raises(ValueError, match="end with a human turn"):
        build_prompt(processor, CONV[:2])


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
