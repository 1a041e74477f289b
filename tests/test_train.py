"""Tests of the training stage (aes_lib.train) on the tiny LLaVA and a few generated PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aes_lib.config import ConfigError
from aes_lib.models import SYSTEM_PROMPTS, build_tiny_llava, load_model_and_processor
from aes_lib.train import TrainConfig, encode_conversation, read_loss_csv, train
from aes_lib.train.data import IGNORE, LlavaDataset, step_indices

ANSWERS = {True: "Yes, it is bright.", False: "No, it is dark."}


def write_split(root: Path, split: str, n: int) -> Path:
    """n LLaVA records over n small PNGs (bright or dark), like the generation stage writes."""
    rng = np.random.RandomState({"train": 0, "val": 1}[split])
    (root / "data" / "images").mkdir(parents=True, exist_ok=True)
    (root / "instructions").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        bright = i % 2 == 0
        arr = (rng.rand(40, 48, 3) * 60 + (180 if bright else 20)).astype(np.uint8)
        name = f"images/{split}_{i}.png"
        Image.fromarray(arr).save(root / "data" / name)
        records.append({"id": f"{split}-{i}", "image": name, "type": "perception_mcq", "qtype": "yes-no",
                        "conversations": [{"from": "human", "value": "<image>\nIs the image bright?"},
                                          {"from": "gpt", "value": ANSWERS[bright]}]})
    path = root / "instructions" / f"llava_{split}.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_split(root, "train", 16)
    write_split(root, "val", 4)
    build_tiny_llava(root / "base_model", corpus_texts=list(ANSWERS.values()), seed=0)
    return root


def make_cfg(root: Path, run: str, **kw) -> TrainConfig:
    base = dict(train_file=str(root / "instructions/llava_train.json"), val_file="",
                image_root=str(root / "data"), output_dir=str(root / run),
                base_model_dir=str(root / "base_model"), lora_r=8, lora_alpha=16,
                modules_to_save=["lm_head"], lr=2e-3, projector_lr=2e-3, max_steps=4,
                global_batch_size=8, micro_batch_size=4, n_samples=0, merge=False, progress=False,
                lora_dropout=0.1)
    base.update(kw)
    return TrainConfig.from_dict(base)


def trainable_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


# --- data ------------------------------------------------------------------------------------

def test_label_masking_positions_exact(workspace):
    _, processor = load_model_and_processor(workspace / "base_model")
    tok = processor.tokenizer
    conv = [{"from": "human", "value": "<image>\nIs it blurry?"}, {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Soft edges."}]
    n_img = 3
    enc = encode_conversation(processor, conv, n_image_tokens=n_img, max_length=512)

    def n_tokens(text):  # as inference tokenizes a prompt: whole, with <s>, <image> expanded
        return len(tok(text)["input_ids"]) + n_img - 1

    first = SYSTEM_PROMPTS["v1"] + " USER: <image>\nIs it blurry? ASSISTANT:"  # the default conversation
    second = first + " Yes.</s>USER: Why? ASSISTANT:"
    full = second + " Soft edges.</s>"
    a1, e1 = n_tokens(first), n_tokens(first + " Yes.</s>")
    a2, e2 = n_tokens(second), n_tokens(full)
    assert len(enc.input_ids) == e2
    supervised = [i for i, label in enumerate(enc.labels) if label != IGNORE]
    assert supervised == list(range(a1, e1)) + list(range(a2, e2))
    assert all(enc.labels[i] == enc.input_ids[i] for i in supervised)
    assert tok.decode(enc.input_ids[a1:e1]) == " Yes.</s>"  # each answer ends with </s>
    assert tok.decode(enc.input_ids[a2:e2]) == " Soft edges.</s>"
    assert enc.input_ids[0] == tok.bos_token_id and enc.labels[0] == IGNORE
    assert enc.input_ids.count(processor.image_token_id) == n_img


def test_prompt_tokens_match_the_processor(workspace):
    """The collator's ids for the prompt are exactly what processor(images, text) produces."""
    from aes_lib.models import build_prompt

    _, processor = load_model_and_processor(workspace / "base_model")
    conv = [{"from": "human", "value": "<image>\nIs the image bright?"}, {"from": "gpt", "value": "Yes."}]
    enc = encode_conversation(processor, conv, n_image_tokens=16, max_length=512)
    image = Image.open(workspace / "data/images/train_0.png").convert("RGB")
    ref = processor(images=image, text=build_prompt(processor, conv[:1]), return_tensors="np")
    ref_ids = ref["input_ids"][0].tolist()
    assert enc.input_ids[:len(ref_ids)] == ref_ids
    assert all(label == IGNORE for label in enc.labels[:len(ref_ids)])
    assert enc.labels[len(ref_ids)] != IGNORE


def test_dropped_and_truncated_counts(workspace):
    _, processor = load_model_and_processor(workspace / "base_model")
    recs = json.loads((workspace / "instructions/llava_train.json").read_text())[:4]
    prompt = encode_conversation(processor, recs[0]["conversations"], 16, 10 ** 6)
    n_prompt = prompt.labels.index(next(x for x in prompt.labels if x != IGNORE))  # first answer token
    last_image = max(i for i, t in enumerate(prompt.input_ids) if t == processor.image_token_id)
    long_answer = {**recs[0], "id": "long",
                   "conversations": [recs[0]["conversations"][0], {"from": "gpt", "value": "bright " * 60}]}
    # room for the prompt and one answer token: every sample kept, all truncated but the short ones
    data = LlavaDataset(processor, recs + [long_answer], workspace / "data", max_length=n_prompt + 8)
    s = data.stats
    assert (s.n_records, s.n_kept, s.n_truncated, s.n_dropped_no_supervised) == (5, 5, 1, 0)
    # no room for any answer token: nothing to train on is an error, not a zero loss
    with pytest.raises(ValueError, match="none of the 4 samples has a supervised"):
        LlavaDataset(processor, recs, workspace / "data", max_length=n_prompt)
    # the image placeholders cut (the system prompt before them too long): said so
    with pytest.raises(ValueError, match="max_length=.* cuts the 16 image tokens of every one of the 4"):
        LlavaDataset(processor, recs, workspace / "data", max_length=last_image)
    # a long question pushes the answer out: dropped and counted; too many of them is an error
    long_q = [{**r, "id": f"longq{i}", "conversations": [
        {"from": "human", "value": "<image>\n" + "Is the image bright? " * 8}, r["conversations"][1]]}
        for i, r in enumerate(recs)]
    mixed = LlavaDataset(processor, recs + long_q[:1], workspace / "data", max_length=n_prompt + 8,
                         max_dropped_fraction=0.5)
    assert (mixed.stats.n_kept, mixed.stats.n_dropped_no_supervised, mixed.stats.dropped_ids) == \
        (4, 1, ["longq0"])
    with pytest.raises(ValueError, match="max_dropped_fraction"):
        LlavaDataset(processor, recs[:1] + long_q, workspace / "data", max_length=n_prompt + 8,
                     max_dropped_fraction=0.5)


def test_template_that_hides_answers_is_an_error(workspace):
    """The classic silent failure (every label masked, loss 0) is caught before training."""
    _, processor = load_model_and_processor(workspace / "base_model")
    recs = json.loads((workspace / "instructions/llava_train.json").read_text())[:3]
    user = "{% if m['role'] == 'user' %}USER: <image>\n{{ m['content'][-1]['text'] }} {% endif %}"
    # the answers' text never rendered (a template written for another content layout)
    processor.chat_template = ("{% for m in messages %}" + user + "{% if m['role'] == 'assistant' %}"
                               "ASSISTANT:{% endif %}{% endfor %}"
                               "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    with pytest.raises(ValueError, match="none of the 3 samples has a supervised"):
        LlavaDataset(processor, recs, workspace / "data", max_length=512)
    # a template whose generation cue is not where the answer starts: cannot locate answers
    processor.chat_template = ("{% for m in messages %}" + user + "{% endfor %}"
                               "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    with pytest.raises(ValueError, match="assistant tokens cannot be located"):
        LlavaDataset(processor, recs, workspace / "data", max_length=512)


def test_missing_image_is_an_error(workspace, tmp_path):
    _, processor = load_model_and_processor(workspace / "base_model")
    recs = json.loads((workspace / "instructions/llava_train.json").read_text())[:2]
    recs[1] = {**recs[1], "image": "images/nope.png"}
    with pytest.raises(FileNotFoundError, match="nope.png.*train-1"):
        LlavaDataset(processor, recs, workspace / "data", max_length=512)


def test_step_indices_cover_epochs_and_are_seeded():
    first = [step_indices(10, 4, s, seed=3) for s in range(2)]
    assert len(set(first[0]) | set(first[1])) == 8  # no sample twice in an epoch
    assert step_indices(10, 4, 1, seed=3) == first[1]
    assert step_indices(10, 4, 2, seed=3) != step_indices(10, 4, 0, seed=3)  # new epoch, new order
    with pytest.raises(ValueError, match="fewer than one global batch"):
        step_indices(3, 4, 0, seed=0)


def test_config_checks():
    with pytest.raises(ConfigError, match="global_batch_size"):
        TrainConfig.from_dict({"global_batch_size": 10, "micro_batch_size": 4})
    with pytest.raises(ConfigError, match="test split"):
        TrainConfig.from_dict({"val_file": "outputs/instructions/llava_test.json"})
    assert TrainConfig.from_dict({"method": "full"}).lr == 2e-5
    cfg = TrainConfig.from_dict({})
    assert (cfg.lr, cfg.projector_lr, cfg.lora_r, cfg.lora_alpha) == (2e-4, 2e-5, 128, 256)
    assert cfg.grad_accum(2) == 4



# --- training ----------------------------------------------------------------------------------

def _close(a: dict, b: dict, atol: float) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


def test_resume_gives_the_same_weights_as_a_straight_run(workspace):
    straight = train(make_cfg(workspace, "straight", max_steps=4))
    cfg = make_cfg(workspace, "resumed", max_steps=4, save_every=2)
    half = train(cfg, stop_after=2)
    assert half["steps_done"] == 2 and not (workspace / "resumed/adapter").exists()
    assert (workspace / "resumed/checkpoint-2/state/optimizer.bin").exists()
    for name in ("config.json", "loss.csv", "data_stats.json"):
        assert (workspace / "resumed/checkpoint-2" / name).stat().st_size > 0
    with pytest.raises(ValueError, match="cannot resume with global_batch_size=4"):
        train(make_cfg(workspace, "resumed", max_steps=4, save_every=2, resume_from="latest",
                       global_batch_size=4))
    resumed = train(make_cfg(workspace, "resumed", max_steps=4, save_every=2, resume_from="latest"))
    assert resumed["steps_done"] == 4
    a = trainable_state(workspace / "straight/adapter")
    b = trainable_state(workspace / "resumed/adapter")
    assert _close(a, b, atol=1e-6)
    la = [r["loss"] for r in read_loss_csv(workspace / "straight/loss.csv")]
    lb = [r["loss"] for r in read_loss_csv(workspace / "resumed/loss.csv")]
    assert len(la) == len(lb) == 4 and np.allclose(la, lb, atol=1e-5)
    # and the run moved: the adapter is not its initial value
    init = trainable_state(workspace / "resumed/checkpoint-2/adapter")
    assert not _close(init, b, atol=1e-6)
    assert straight["first_loss"] > straight["last_loss"]


def test_grad_accumulation_keeps_the_global_batch(workspace):
    one = train(make_cfg(workspace, "acc1", micro_batch_size=8, lora_dropout=0.0, max_steps=2))
    two = train(make_cfg(workspace, "acc2", micro_batch_size=2, lora_dropout=0.0, max_steps=2))
    assert (one["grad_accum"], two["grad_accum"]) == (1, 4)
    assert _close(trainable_state(workspace / "acc1/adapter"), trainable_state(workspace / "acc2/adapter"),
                  atol=1e-5)


def test_merged_model_matches_base_plus_adapter_and_outputs(workspace):
    import torch

    summary = train(make_cfg(workspace, "merge", merge=True, n_samples=2, max_steps=3,
                             val_file=str(workspace / "instructions/llava_val.json")))
    run = workspace / "merge"
    for name in ("adapter", "merged", "loss.csv", "config.json", "data_stats.json", "samples.json"):
        assert (run / name).exists(), name
    samples = json.loads((run / "samples.json").read_text())
    assert len(samples) == 2 and all({"before", "after", "question", "reference"} <= set(s) for s in samples)
    assert "val_loss_before" in summary and "val_loss_after" in summary
    rows = read_loss_csv(run / "loss.csv")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["tokens"] > rows[0]["tokens"] > 0
    lora, processor = load_model_and_processor(workspace / "base_model", adapter=run / "adapter")
    merged, _ = load_model_and_processor(run / "merged")
    base, _ = load_model_and_processor(workspace / "base_model")
    image = Image.open(workspace / "data/images/val_0.png").convert("RGB")
    inputs = processor(images=image, text="USER: <image>\nIs the image bright? ASSISTANT: Yes",
                       return_tensors="pt")
    with torch.no_grad():
        a, b, c = lora(**inputs).logits, merged(**inputs).logits, base(**inputs).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-3)  # training changed something
    assert type(merged).__name__ == "LlavaForConditionalGeneration"


def test_full_finetune_changes_exactly_the_trainable_parameters(workspace):
    from safetensors.torch import load_file

    train(make_cfg(workspace, "full", method="full", lr=1e-3, projector_lr=1e-3, max_steps=1,
                   warmup_ratio=0.0, max_grad_norm=0.0))
    before = load_file(str(workspace / "base_model/model.safetensors"))
    after = load_file(str(workspace / "full/merged/model.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    vision = {k for k in before if "vision_tower" in k}
    assert not (changed & vision)  # frozen
    # every language-model tensor (layers, norms, embeddings, lm_head) and the projector move
    must = {k for k in before if k.startswith(("language_model.", "multi_modal_projector."))}
    assert len(must) > 20 and changed == must
    # within the embedding, only the rows of tokens the batch used (Adam moves nothing else)
    emb = "language_model.model.embed_tokens.weight"
    rows = np.flatnonzero((before[emb] != after[emb]).any(dim=1).numpy())
    assert 0 < len(rows) < before[emb].shape[0] // 2


def test_cli_train_and_errors(workspace, tmp_path, capsys):
    import yaml

    from aes_lib.cli import main

    cfg = make_cfg(workspace, str(tmp_path / "cli")).to_dict()
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--max-steps", "2",
                 "--set", "lora_dropout=0.0"]) == 0
    assert len(read_loss_csv(tmp_path / "cli/loss.csv")) == 2
    assert json.loads((tmp_path / "cli/config.json").read_text())["lora_dropout"] == 0.0
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--set", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["merge-adapter", "--base", str(workspace / "base_model"), "--adapter",
                 str(tmp_path / "cli/adapter"), "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m/model.safetensors").exists()


def test_accelerate_configs_parse():
    import yaml

    from aes_lib.train.launch import ACCELERATE_CONFIGS, accelerate_config

    kinds = {}
    for name in ACCELERATE_CONFIGS:
        data = yaml.safe_load(accelerate_config(name).read_text())
        kinds[name] = data["distributed_type"]
        assert data["mixed_precision"] == "bf16"
    assert kinds == {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP",
                     "deepspeed_zero3": "DEEPSPEED"}


def test_prefetcher_returns_the_same_batches_in_order():
    from aes_lib.train.loop import Prefetcher

    calls = []

    def fetch(k):
        calls.append(k)
        return [k * 10]

    for enabled in (False, True):
        calls.clear()
        pre = Prefetcher(fetch, enabled)
        got = [pre(k, upcoming=k + 1 if k < 4 else None) for k in range(5)]
        pre.close()
        assert got == [[0], [10], [20], [30], [40]] and sorted(calls) == [0, 1, 2, 3, 4]


#: the chat template the llava-hf LLaVA-1.5 checkpoints ship (no </s> after answers)
LLAVA_HF_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] "
    "!= 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def test_llava_hf_template_gets_answers_closed_by_eos(workspace):
    from aes_lib.models import build_prompt
    from aes_lib.train.data import masked_view

    _, processor = load_model_and_processor(workspace / "base_model")
    processor.chat_template = LLAVA_HF_TEMPLATE
    conv = [{"from": "human", "value": "<image>\nIs it blurry?"}, {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Soft edges."}]
    assert masked_view(processor, conv) == ("<s>USER: <image>\nIs it blurry? ASSISTANT:[[ Yes.</s>]]"
                                            "USER: Why? ASSISTANT:[[ Soft edges.</s>]]")
    enc = encode_conversation(processor, conv, n_image_tokens=16, max_length=512)
    image = Image.open(workspace / "data/images/train_0.png").convert("RGB")
    ref = processor(images=image, text=build_prompt(processor, conv[:1]), return_tensors="np")
    ref_ids = ref["input_ids"][0].tolist()
    assert enc.input_ids[:len(ref_ids)] == ref_ids and enc.labels[len(ref_ids)] != IGNORE


@pytest.mark.slow
def test_two_processes_give_the_same_update_as_one(workspace, tmp_path):
    """DDP on 2 CPU processes (gloo, torchrun) with accumulation 1 = one process accumulating 2,
    LoRA dropout on: each micro-batch's dropout masks are seeded by its place in the global batch."""
    import os
    import subprocess
    import sys

    import yaml

    one = train(make_cfg(workspace, "ddp_one", lora_dropout=0.1, max_steps=2))
    assert one["grad_accum"] == 2
    cfg = make_cfg(workspace, "ddp_two", lora_dropout=0.1, max_steps=2).to_dict()
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "aes_lib.cli", "train", "--config", str(tmp_path / "ddp.yaml")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 samples (4 x 2 x 1 accumulation)" in proc.stderr
    assert _close(trainable_state(workspace / "ddp_one/adapter"), trainable_state(workspace / "ddp_two/adapter"),
                  atol=1e-6)
    assert [r["loss"] for r in read_loss_csv(workspace / "ddp_one/loss.csv")] == \
        pytest.approx([r["loss"] for r in read_loss_csv(workspace / "ddp_two/loss.csv")], abs=1e-6)


def test_shipped_train_configs_load():
    from importlib import resources

    for name, method, r in (("train_tiny_cpu.yaml", "lora", 16), ("train_llava15_lora.yaml", "lora", 128)):
        path = Path(str(resources.files("aes_lib").joinpath("assets", name)))
        cfg = TrainConfig.from_yaml(path)
        assert (cfg.method, cfg.lora_r) == (method, r)
    assert TrainConfig.from_yaml(path).model == "llava-hf/llava-1.5-7b-hf"


def test_select_types_keeps_only_the_listed_types():
    from aes_lib.train.data import select_types

    recs = [{"id": str(i), "type": t} for i, t in enumerate(["a", "b", "a", "c"])]
    assert [r["id"] for r in select_types(recs, ["a", "c"])] == ["0", "2", "3"]
    assert select_types(recs, []) == recs
    with pytest.raises(ValueError, match=r"f.json.*no record of type \['z'\]"):
        select_types(recs, ["a", "z"], "f.json")
    with pytest.raises(ConfigError, match="types"):
        TrainConfig.from_dict({"types": [""]})


def test_types_filter_the_training_records(workspace, tmp_path):
    records = json.loads((workspace / "instructions/llava_train.json").read_text())
    for rec in records[1::2]:
        rec["type"] = "description"
    (tmp_path / "mixed.json").write_text(json.dumps(records))
    train(make_cfg(workspace, str(tmp_path / "typed"), train_file=str(tmp_path / "mixed.json"),
                   types=["perception_mcq"], max_steps=1))
    stats = json.loads((tmp_path / "typed/data_stats.json").read_text())
    assert stats["n_records"] == 8 and stats["counts_by_type"] == {"perception_mcq": 8}


# --- issue 13: input format, bf16 master weights, memory, launch and length checks ------------

def test_masked_view_with_the_v1_system_prompt(workspace):
    """The system prompt is context, never supervised; each answer (closed by </s>) is."""
    from aes_lib.train.data import masked_view

    _, processor = load_model_and_processor(workspace / "base_model")
    conv = [{"from": "human", "value": "<image>\nIs it blurry?"}, {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Soft edges."}]
    assert masked_view(processor, conv) == ("<s>" + SYSTEM_PROMPTS["v1"] + " USER: <image>\nIs it blurry? "
                                            "ASSISTANT:[[ Yes.</s>]]USER: Why? ASSISTANT:[[ Soft edges.</s>]]")


def test_trained_model_carries_its_input_format_to_evaluation(workspace):
    """What training chose is saved with adapter, merged model and checkpoints, and loading
    them (what evaluation does) applies it again."""
    from aes_lib.models import build_prompt, input_format_of, read_input_format

    chosen = {"image_mode": "crop", "conversation": "llava_v1"}
    summary = train(make_cfg(workspace, "fmt", max_steps=1, merge=True, save_every=1, **chosen))
    run = workspace / "fmt"
    assert summary["input_format"] == chosen
    for folder in (run / "adapter", run / "merged", run / "checkpoint-1" / "adapter"):
        assert read_input_format(folder) == chosen, folder
    _, from_adapter = load_model_and_processor(workspace / "base_model", adapter=run / "adapter")
    _, from_merged = load_model_and_processor(run / "merged")
    for processor in (from_adapter, from_merged):
        assert input_format_of(processor) == chosen
        assert build_prompt(processor, [{"from": "human", "value": "<image>\nQ?"}]) == \
            SYSTEM_PROMPTS["llava_v1"] + " USER: <image>\nQ? ASSISTANT:"
    # the base model itself records nothing: it gets the default (pad, v1)
    _, base = load_model_and_processor(workspace / "base_model")
    assert input_format_of(base) == {"image_mode": "pad", "conversation": "v1"}
    # the evaluation stage's loader: the saved format, unless its config names another
    from aes_lib.evaluate.run import EvalConfig, _load_local

    assert input_format_of(_load_local(run / "merged", None, EvalConfig(device="cpu"))[1]) == chosen
    assert input_format_of(_load_local(workspace / "base_model", run / "adapter", EvalConfig(device="cpu"))[1]) == chosen
    override = EvalConfig(device="cpu", image_mode="pad", conversation="v1")
    assert input_format_of(_load_local(run / "merged", None, override)[1]) == {"image_mode": "pad", "conversation": "v1"}
    with pytest.raises(ConfigError, match="image_mode"):
        EvalConfig.from_dict({"image_mode": "stretch"})
    with pytest.raises(ValueError, match="cannot resume with image_mode='pad'"):
        train(make_cfg(workspace, "fmt", max_steps=1, save_every=1, resume_from="latest", conversation="llava_v1"))


def _big_weight_changes(before, after, threshold: float = 2 ** -6) -> float:
    """Share of the weights with |w| > threshold whose value changed."""
    big = before.abs() > threshold
    assert int(big.sum()) > 100
    return float((after[big] != before[big]).float().mean())


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one mixed-precision setting per process: clear it around a bf16 test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_bf16_lora_keeps_fp32_masters_so_a_2e5_step_moves_the_projector(workspace, fresh_accelerator_state):
    """At the recipe's projector lr 2e-5, bf16 storage rounds every update of a weight above 2^-6
    away; the fp32 master weights keep it. Save, resume and merge work on them."""
    import torch
    from safetensors.torch import load_file

    kw = dict(precision="bf16", lr=2e-5, projector_lr=2e-5, warmup_ratio=0.0, lora_dropout=0.0,
              max_grad_norm=0.0, lr_scheduler="constant")
    train(make_cfg(workspace, "bf16_one", max_steps=1, **kw))
    base = load_file(str(workspace / "base_model/model.safetensors"))
    adapter = trainable_state(workspace / "bf16_one/adapter")
    saved = {k: v for k, v in adapter.items() if "lora_" not in k}
    # the projector's two layers and lm_head (modules_to_save), as named in the base checkpoint
    base_name = {f"base_model.model.model.multi_modal_projector.linear_{i}.{w}": f"multi_modal_projector.linear_{i}.{w}"
                 for i in (1, 2) for w in ("weight", "bias")}
    base_name["base_model.model.lm_head.weight"] = "language_model.lm_head.weight"
    assert set(saved) == set(base_name)
    for key, value in saved.items():
        assert value.dtype == torch.float32, key
        if value.ndim == 2:   # every sizeable weight moved by one 2e-5 step from its bf16 start
            start = base[base_name[key]].to(torch.bfloat16).float()
            assert _big_weight_changes(start, value) > 0.99, key
    # resume in bf16 gives the same weights as a straight run; merging folds the fp32 values in
    train(make_cfg(workspace, "bf16_straight", max_steps=2, merge=True, **kw))
    train(make_cfg(workspace, "bf16_resumed", max_steps=2, save_every=1, **kw), stop_after=1)
    train(make_cfg(workspace, "bf16_resumed", max_steps=2, save_every=1, resume_from="latest", **kw))
    assert _close(trainable_state(workspace / "bf16_straight/adapter"),
                  trainable_state(workspace / "bf16_resumed/adapter"), atol=1e-6)
    merged = load_file(str(workspace / "bf16_straight/merged/model.safetensors"))
    trained = trainable_state(workspace / "bf16_straight/adapter")
    proj = next(k for k in trained if k.endswith("multi_modal_projector.linear_1.weight"))
    assert torch.equal(merged["multi_modal_projector.linear_1.weight"], trained[proj])


def test_keep_fp32_masters_casts_only_trainable_half_tensors():
    import torch

    from aes_lib.train.loop import keep_fp32_masters

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    assert keep_fp32_masters(model) == 2
    assert [p.dtype for p in model.parameters()] == [torch.bfloat16] * 2 + [torch.float32] * 2


def test_max_length_that_cannot_hold_the_image_tokens_says_so(workspace):
    _, processor = load_model_and_processor(workspace / "base_model")
    recs = json.loads((workspace / "instructions/llava_train.json").read_text())[:2]
    with pytest.raises(ValueError, match="max_length=12 cannot hold the model's 16 image tokens"):
        LlavaDataset(processor, recs, workspace / "data", max_length=12)


def test_memory_estimate_on_known_parameter_counts():
    from aes_lib.train.memory import GIB, estimate_training_memory

    seven_b = 7_000_000_000
    full = estimate_training_memory(seven_b, 0)                      # one GPU, every weight trained
    assert full.total == 16 * seven_b == 112e9                       # the "about 112 GB"
    assert (full.trainable_weights, full.gradients, full.optimizer_states) == (28e9, 28e9, 56e9)
    zero3 = estimate_training_memory(seven_b, 0, processes=8, sharding="full")
    assert zero3.total == 14e9                                       # split 8 ways
    zero2 = estimate_training_memory(seven_b, 0, processes=8, sharding="gradients")
    assert zero2.total == 28e9 + (28e9 + 56e9) / 8
    # LoRA r 128 on a 7B LM (~320 M trainable with the projector), base frozen in bf16
    lora = estimate_training_memory(320_000_000, seven_b, frozen_bytes=2)
    assert lora.total == 14e9 + 16 * 320e6
    assert "GiB per process" in lora.describe() and f"{lora.total / GIB:.1f}" in lora.describe()
    with pytest.raises(ValueError, match="sharding"):
        estimate_training_memory(1, 1, sharding="zero4")


def test_sharding_is_read_off_the_accelerator():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from aes_lib.train.memory import sharding_of

    def acc(kind, **state):
        return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(**state))

    assert sharding_of(acc(DistributedType.NO)) == sharding_of(acc(DistributedType.MULTI_GPU)) == "none"
    assert sharding_of(acc(DistributedType.FSDP, fsdp_plugin=SimpleNamespace(sharding_strategy=None))) == "full"
    assert sharding_of(acc(DistributedType.FSDP, fsdp_plugin=SimpleNamespace(
        sharding_strategy="ShardingStrategy.SHARD_GRAD_OP"))) == "gradients"
    for stage, level in ((1, "optimizer"), (2, "gradients"), (3, "full")):
        assert sharding_of(acc(DistributedType.DEEPSPEED,
                               deepspeed_plugin=SimpleNamespace(zero_stage=stage))) == level


def test_training_logs_the_memory_estimate(workspace, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="aes_lib.train.memory"):
        summary = train(make_cfg(workspace, "mem", max_steps=1))
    assert any("memory estimate:" in r.getMessage() and "sharding none" in r.getMessage()
               for r in caplog.records)
    assert 0 < summary["memory_estimate_gib"] < 0.1   # the tiny model: well under 100 MiB


def test_requested_cpu_processes_reads_accelerate_command_lines(tmp_path):
    from aes_lib.train.launch import requested_cpu_processes

    acc = ["/usr/bin/python3", "/venv/bin/accelerate", "launch"]
    assert requested_cpu_processes(acc + ["--cpu", "--num_processes", "2", "-m", "aes_lib.cli", "train"]) == 2
    assert requested_cpu_processes(acc + ["--cpu", "--num-processes=3", "run.py", "--num_processes", "9"]) == 3
    assert requested_cpu_processes(acc + ["--num_processes", "2", "-m", "aes_lib.cli", "train"]) == 1  # GPUs
    assert requested_cpu_processes(acc + ["--cpu", "-m", "aes_lib.cli", "train"]) == 1
    assert requested_cpu_processes(["torchrun", "--nproc_per_node", "2", "-m", "aes_lib.cli"]) == 1
    cfg = tmp_path / "cpu.yaml"
    cfg.write_text("use_cpu: true\nnum_processes: 4\ndistributed_type: MULTI_CPU\n")
    assert requested_cpu_processes(acc + ["--config_file", str(cfg), "-m", "aes_lib.cli", "train"]) == 4


@pytest.mark.slow
def test_accelerate_launch_cpu_with_two_processes_is_refused(workspace, tmp_path):
    """accelerate starts one process for --cpu whatever --num_processes says: the run stops and says so."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if accelerate is None:
        pytest.skip("no accelerate command next to this Python")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(make_cfg(workspace, str(tmp_path / "run")).to_dict()))
    proc = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "aes_lib.cli", "train",
                           "--config", str(tmp_path / "t.yaml")], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "started 1 process, not the 2 asked for" in proc.stderr and "torchrun" in proc.stderr
    assert not (tmp_path / "run").exists()
