"""Answering benchmark items: local models (option likelihood or generation) and API models.

Every answerer returns one prediction dict per item::

    {"id", "dimension", "attribute", "qtype", "source", "image", "answer" (correct letter or ""),
     "pred" (letter or ""), "response" (text), "parsed" (bool), "method", "scores" (list|None)}

``pred`` is ``""`` when the response names no option; such an item counts as wrong and is
listed under ``unparsed`` in the results. ``response`` is always a reply as a model would give
it: the likelihood method writes the chosen option as the prompt lists it (``"B. No"``), never
a bare letter (AesBench's scripts re-ask any reply shorter than 3 characters).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from aes_lib.evaluate.bench import listed_option, mcq_prompt, prompt_file, prompt_yaml
from aes_lib.evaluate.extract import extract_option
from aes_lib.schema import GRADE_SCORE, GRADES, BenchItem, option_letters

log = logging.getLogger(__name__)

MCQ_PROMPT = "eval_mcq_v1.txt"
SCORE_PROMPT = "eval_score_v1.yaml"
METHODS = ("likelihood", "generate")


def _human_value(item: BenchItem, template: str) -> str:
    text = item.question if item.dimension == "AesI" else mcq_prompt(item, template)
    return "<image>\n" + text


def _record(item: BenchItem, method: str, response: str, pred: str | None,
            scores: list[float] | None = None) -> dict[str, Any]:
    return {"id": item.id, "dimension": item.dimension, "attribute": item.attribute,
            "qtype": item.qtype, "source": item.source, "image": item.image, "answer": item.answer,
            "pred": pred or "", "response": response, "parsed": pred is not None or item.dimension == "AesI",
            "method": method, "scores": scores}


def _image_path(item_image: str, image_root: str | Path) -> Path:
    path = Path(image_root) / item_image
    if not path.exists():
        raise FileNotFoundError(f"{path}: image of benchmark item not found (image root {image_root})")
    return path


# --- local models ----------------------------------------------------------------------------

def generate_texts(model, processor, prompts: Sequence[str], images: Sequence[Path],
                   max_new_tokens: int = 16, batch_size: int = 8, progress: bool = False) -> list[str]:
    """Greedy answers, batched with left padding."""
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    tok = processor.tokenizer
    old_side, tok.padding_side = tok.padding_side, "left"
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out_texts: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
            ims = []
            for p in images[start:start + batch_size]:
                with Image.open(p) as im:
                    ims.append(im.convert("RGB"))
            enc = processor(images=ims, text=list(prompts[start:start + batch_size]),
                            return_tensors="pt", padding=True).to(device)
            enc["pixel_values"] = enc["pixel_values"].to(dtype)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            out_texts += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    finally:
        tok.padding_side = old_side
    return out_texts


def answer_local(items: Sequence[BenchItem], model, processor, image_root: str | Path,
                 method: str = "likelihood", mode: str = "first-token", reduce: str = "sum",
                 batch_images: int = 8, batch_size: int = 8, max_new_tokens: int = 16,
                 open_max_new_tokens: int = 96, progress: bool = False) -> list[dict[str, Any]]:
    """Answer every item with a local model; AesI items are always generated."""
    from aes_lib.evaluate.likelihood import OptionScorer, Query, answer_continuation
    from aes_lib.models import build_prompt

    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    template = prompt_file(MCQ_PROMPT)
    mcq = [it for it in items if it.dimension != "AesI"]
    open_items = [it for it in items if it.dimension == "AesI"]
    preds: dict[str, dict[str, Any]] = {}
    prompts = {it.id: build_prompt(processor, [{"from": "human", "value": _human_value(it, template)}])
               for it in items}
    paths = {it.id: _image_path(it.image, image_root) for it in items}
    if mcq and method == "likelihood":
        scorer = OptionScorer(model, processor, mode=mode, reduce=reduce, batch_images=batch_images)
        queries, cont_of = [], {}
        for it in mcq:
            hv, prompt = _human_value(it, template), prompts[it.id]
            # first-token: the letters, as the prompt asks for them; full: the options' texts
            answers = option_letters(len(it.options)) if mode == "first-token" else it.options
            for a in answers:  # the template's text before an answer (" A" for LLaVA v1), once each
                if a not in cont_of:
                    cont_of[a] = answer_continuation(processor, hv, a, prompt)
            queries.append(Query(it.id, paths[it.id], prompt, [cont_of[a] for a in answers]))
        for it, scores in zip(mcq, scorer.score(queries, progress=progress)):
            best = max(range(len(scores)), key=scores.__getitem__)
            letter = option_letters(len(it.options))[best]
            preds[it.id] = _record(it, f"likelihood:{mode}:{reduce}", listed_option(it, best),
                                   letter, [round(s, 6) for s in scores])
    elif mcq:
        texts = generate_texts(model, processor, [prompts[i.id] for i in mcq], [paths[i.id] for i in mcq],
                               max_new_tokens, batch_size, progress)
        for it, text in zip(mcq, texts):
            preds[it.id] = _record(it, "generate", text, extract_option(text, it.options))
    if open_items:
        texts = generate_texts(model, processor, [prompts[i.id] for i in open_items],
                               [paths[i.id] for i in open_items], open_max_new_tokens, batch_size, progress)
        for it, text in zip(open_items, texts):
            preds[it.id] = _record(it, "generate", text, None)
    return [preds[it.id] for it in items]


def predict_scores(rows: Sequence[dict[str, Any]], model, processor, image_root: str | Path,
                   batch_images: int = 8, progress: bool = False) -> list[dict[str, Any]]:
    """Expected grade score (1-5) from the probabilities of the five grade words (Q-Align style)."""
    from aes_lib.evaluate.likelihood import OptionScorer, Query, answer_continuation
    from aes_lib.models import build_prompt

    cfg = prompt_yaml(SCORE_PROMPT)
    hv = "<image>\n" + cfg["question"]
    prompt = build_prompt(processor, [{"from": "human", "value": hv}])
    lead = answer_continuation(processor, hv, cfg["answer_prefix"], prompt)
    conts = [" " + g for g in GRADES]
    queries = [Query(str(i), _image_path(r["image"], image_root), prompt + lead, conts)
               for i, r in enumerate(rows)]
    scorer = OptionScorer(model, processor, mode="first-token", batch_images=batch_images)
    out = []
    for r, logps in zip(rows, scorer.score(queries, progress=progress)):
        m = max(logps)
        probs = [math.exp(x - m) for x in logps]
        z = sum(probs)
        probs = [p / z for p in probs]
        out.append({"image": r["image"], "gt_score": r["gt_score"],
                    "pred_score": sum(p * GRADE_SCORE[g] for p, g in zip(probs, GRADES)),
                    "grade_probs": dict(zip(GRADES, (round(p, 6) for p in probs)))})
    return out


# --- API models ------------------------------------------------------------------------------

def api_messages(item: BenchItem, image_path: Path, template: str, detail: str = "low") -> list[dict]:
    """An OpenAI vision chat message in AesBench's prompt format."""
    from aes_lib.client import image_data_url

    text = item.question if item.dimension == "AesI" else mcq_prompt(item, template)
    return [{"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": image_data_url(image_path), "detail": detail}}]}]


def answer_api(items: Sequence[BenchItem], client_cfg: dict[str, Any], image_root: str | Path,
               progress: bool = False) -> list[dict[str, Any]]:
    """Answer with an OpenAI-compatible vision model through :mod:`aes_lib.client`.

    ``client_cfg`` holds :class:`aes_lib.client.ClientConfig` keys (``model``, ``base_url``,
    ``cache_path``, ...); JSON mode is turned off since answers are free text. A request that
    fails after the client's retries is an error naming the item.
    """
    from aes_lib.client import ChatRequest, ClientConfig, LLMClient

    cfg = ClientConfig.from_dict({"json_mode": False, "temperature": 0.0, "max_tokens": 256, **client_cfg})
    template = prompt_file(MCQ_PROMPT)
    requests = [ChatRequest(key=it.id, messages=api_messages(it, _image_path(it.image, image_root),
                                                             template, cfg.image_detail),
                            prompt_version=MCQ_PROMPT) for it in items]
    results = LLMClient(cfg).run(requests, progress=progress)
    out = []
    for it, res in zip(items, results):
        if not res.ok:
            raise ValueError(f"API answer for item {it.id!r} failed after the client's retries: {res.error}")
        text = res.text.strip()
        pred = None if it.dimension == "AesI" else extract_option(text, it.options)
        out.append(_record(it, f"api:{cfg.model}", text, pred))
    return out
