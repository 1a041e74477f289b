"""Answering benchmark items: local models (option likelihood or generation) and API models.

Every answerer returns one prediction dict per item::

    {"id", "dimension", "attribute", "qtype", "source", "image", "answer" (correct letter or ""),
     "pred" (letter or ""), "response" (text), "parsed" (bool), "method", "scores" (list|None),
     "reasks" (int)}

``pred`` is ``""`` when the response names no option; such an item counts as wrong and is
listed under ``unparsed`` in the results. ``response`` is always a reply as a model would give
it: the likelihood method writes the chosen option as the prompt lists it (``"B. No"``), never
a bare letter (AesBench's scripts re-ask any reply shorter than 3 characters).

Short replies: with ``short_reply_tries`` N > 1 (the evaluation run sets it on AesBench files),
a generated or API reply shorter than :data:`MIN_REPLY_CHARS` characters (after stripping) is
asked again with the same prompt, as AesBench's official scripts do, but at most N asks in all
(the official scripts never stop); re-asks sample at ``reask_temperature`` (greedy decoding would
give the same reply again). When every ask is short, the last reply is kept. ``reasks`` counts
the re-asks sent for the item in this run.
"""

from __future__ import annotations

import contextlib
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
#: AesBench's official scripts ask again while the stripped reply is shorter than this.
MIN_REPLY_CHARS = 3


def is_short_reply(text: str) -> bool:
    """A reply AesBench's official scripts would ask again for (under 3 characters, stripped)."""
    return len(text.strip()) < MIN_REPLY_CHARS


def _long_enough(text: str) -> str:
    if is_short_reply(text):
        raise ValueError(f"reply {text.strip()!r} is shorter than {MIN_REPLY_CHARS} characters")
    return text


#: Likelihood modes: ``first-token`` scores the option letters after the listed options (AesBench's
#: letter format); ``full`` each option's text after the listed options; ``cloze`` asks the
#: question *without* the options and scores each option's text as the whole answer (closed by the
#: template's end-of-turn marker), by its mean log-probability per token (the cloze formulation
#: used to evaluate small language models, which cannot bind answers to letters).
LIKELIHOOD_MODES = ("first-token", "full", "cloze")


def _human_value(item: BenchItem, template: str, cloze: bool = False) -> str:
    text = item.question if item.dimension == "AesI" or cloze else mcq_prompt(item, template)
    return "<image>\n" + text


def _record(item: BenchItem, method: str, response: str, pred: str | None,
            scores: list[float] | None = None, reasks: int = 0) -> dict[str, Any]:
    return {"id": item.id, "dimension": item.dimension, "attribute": item.attribute,
            "qtype": item.qtype, "source": item.source, "image": item.image, "answer": item.answer,
            "pred": pred or "", "response": response, "parsed": pred is not None or item.dimension == "AesI",
            "method": method, "scores": scores, "reasks": reasks}


def _image_path(item_image: str, image_root: str | Path) -> Path:
    path = Path(image_root) / item_image
    if not path.exists():
        raise FileNotFoundError(f"{path}: image of benchmark item not found (image root {image_root})")
    return path


# --- local models ----------------------------------------------------------------------------

@contextlib.contextmanager
def _seeded(device, seed: int, active: bool):
    """Sampling from a random state seeded with ``seed``; the global state is restored after."""
    if not active:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def generate_texts(model, processor, prompts: Sequence[str], images: Sequence[Path],
                   max_new_tokens: int = 16, batch_size: int = 8, progress: bool = False,
                   temperature: float = 0.0, seed: int = 0) -> list[str]:
    """Answers batched with left padding: greedy, or sampled at ``temperature`` > 0 (plain
    temperature sampling, no top-k / top-p), each batch from a random state seeded with ``seed`` +
    its first prompt's index (the global random state is left as it was)."""
    import torch
    from aes_lib.images import load_rgb
    from tqdm.auto import tqdm

    from aes_lib.models import decode_reply

    tok = processor.tokenizer
    old_side, tok.padding_side = tok.padding_side, "left"
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} \
        if temperature > 0 else {"do_sample": False}
    out_texts: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
            ims = []
            for p in images[start:start + batch_size]:
                ims.append(load_rgb(p))   # upright, 8-bit RGB: aes_lib.images
            enc = processor(images=ims, text=list(prompts[start:start + batch_size]),
                            return_tensors="pt", padding=True).to(device)
            enc["pixel_values"] = enc["pixel_values"].to(dtype)
            with torch.inference_mode(), _seeded(device, seed + start, temperature > 0):
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                     **sampling)
            new = out[:, enc["input_ids"].shape[1]:]
            out_texts += [decode_reply(tok, row) for row in new]
    finally:
        tok.padding_side = old_side
    return out_texts


def generate_replies(model, processor, prompts: Sequence[str], images: Sequence[Path],
                     max_new_tokens: int, batch_size: int, progress: bool = False,
                     short_reply_tries: int = 1, reask_temperature: float = 1.0,
                     seed: int = 0) -> tuple[list[str], list[int]]:
    """Greedy replies; with ``short_reply_tries`` N > 1, replies shorter than
    :data:`MIN_REPLY_CHARS` are asked again (same prompt, sampled at ``reask_temperature``)
    until long enough or N asks in all; the last reply is kept. Returns (replies, re-asks each)."""
    texts = generate_texts(model, processor, prompts, images, max_new_tokens, batch_size, progress)
    reasks = [0] * len(texts)
    for ask in range(1, short_reply_tries):
        short = [i for i, t in enumerate(texts) if is_short_reply(t)]
        if not short:
            break
        log.info("%d replies shorter than %d characters: asking again (ask %d of %d)", len(short),
                 MIN_REPLY_CHARS, ask + 1, short_reply_tries)
        again = generate_texts(model, processor, [prompts[i] for i in short], [images[i] for i in short],
                               max_new_tokens, batch_size, progress, reask_temperature, seed + ask)
        for i, text in zip(short, again):
            texts[i] = text
            reasks[i] += 1
    return texts, reasks


def answer_local(items: Sequence[BenchItem], model, processor, image_root: str | Path,
                 method: str = "likelihood", mode: str = "first-token", reduce: str = "sum",
                 batch_images: int = 8, batch_size: int = 8, max_new_tokens: int = 16,
                 open_max_new_tokens: int = 96, progress: bool = False, short_reply_tries: int = 1,
                 reask_temperature: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Answer every item with a local model; AesI items are always generated. Generated replies
    shorter than 3 characters are asked again when ``short_reply_tries`` > 1 (see the module
    docstring; ``seed`` seeds the re-asks' sampling)."""
    from aes_lib.evaluate.likelihood import OptionScorer, Query, answer_continuation
    from aes_lib.models import build_prompt

    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    template = prompt_file(MCQ_PROMPT)
    mcq = [it for it in items if it.dimension != "AesI"]
    open_items = [it for it in items if it.dimension == "AesI"]
    preds: dict[str, dict[str, Any]] = {}
    if mode not in LIKELIHOOD_MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(LIKELIHOOD_MODES)}")
    cloze = method == "likelihood" and mode == "cloze"
    human = {it.id: _human_value(it, template, cloze) for it in items}
    prompts = {it.id: build_prompt(processor, [{"from": "human", "value": human[it.id]}]) for it in items}
    paths = {it.id: _image_path(it.image, image_root) for it in items}
    if mcq and method == "likelihood":
        scorer = OptionScorer(model, processor, mode="full" if cloze else mode,
                              reduce="mean" if cloze else reduce, batch_images=batch_images)
        queries, cont_of = [], {}
        for it in mcq:
            hv, prompt = human[it.id], prompts[it.id]
            # first-token: the letters, as the prompt asks for them; full and cloze: the options' texts
            answers = option_letters(len(it.options)) if mode == "first-token" else it.options
            for a in answers:  # the template's text before an answer (" A" for LLaVA v1), once each
                if a not in cont_of:
                    cont_of[a] = answer_continuation(processor, hv, a, prompt, closed=cloze)
            queries.append(Query(it.id, paths[it.id], prompt, [cont_of[a] for a in answers]))
        for it, scores in zip(mcq, scorer.score(queries, progress=progress)):
            best = max(range(len(scores)), key=scores.__getitem__)
            letter = option_letters(len(it.options))[best]
            preds[it.id] = _record(it, f"likelihood:{mode}:{'mean' if cloze else reduce}",
                                   it.options[best] if cloze else listed_option(it, best),
                                   letter, [round(s, 6) for s in scores])
    elif mcq:
        texts, reasks = generate_replies(model, processor, [prompts[i.id] for i in mcq],
                                         [paths[i.id] for i in mcq], max_new_tokens, batch_size, progress,
                                         short_reply_tries, reask_temperature, seed)
        for it, text, n in zip(mcq, texts, reasks):
            preds[it.id] = _record(it, "generate", text, extract_option(text, it.options), reasks=n)
    if open_items:
        texts, reasks = generate_replies(model, processor, [prompts[i.id] for i in open_items],
                                         [paths[i.id] for i in open_items], open_max_new_tokens, batch_size,
                                         progress, short_reply_tries, reask_temperature, seed)
        for it, text, n in zip(open_items, texts, reasks):
            preds[it.id] = _record(it, "generate", text, None, reasks=n)
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
               progress: bool = False, short_reply_tries: int = 1,
               reask_temperature: float = 1.0) -> list[dict[str, Any]]:
    """Answer with an OpenAI-compatible vision model through :mod:`aes_lib.client`.

    ``client_cfg`` holds :class:`aes_lib.client.ClientConfig` keys (``model``, ``base_url``,
    ``cache_path``, ...); JSON mode is turned off since answers are free text. A request that
    fails after the client's retries is an error naming the item. With ``short_reply_tries``
    N > 1, a reply shorter than 3 characters is asked again with the same messages (at
    ``reask_temperature``), N asks in all (this sets the client's ``max_reasks`` to N - 1); the
    last reply is kept, and cached, when every ask is short.
    """
    from aes_lib.client import ChatRequest, ClientConfig, LLMClient

    reask = short_reply_tries > 1
    cfg = ClientConfig.from_dict({"json_mode": False, "temperature": 0.0, "max_tokens": 256, **client_cfg,
                                  **({"max_reasks": short_reply_tries - 1} if reask else {})})
    template = prompt_file(MCQ_PROMPT)
    requests = [ChatRequest(key=it.id, messages=api_messages(it, _image_path(it.image, image_root),
                                                             template, cfg.image_detail),
                            validate=_long_enough if reask else None, prompt_version=MCQ_PROMPT,
                            reask="repeat", reask_temperature=reask_temperature, keep_last=True)
                for it in items]
    results = LLMClient(cfg).run(requests, progress=progress)
    out = []
    for it, res in zip(items, results):
        if not res.ok:
            raise ValueError(f"API answer for item {it.id!r} failed after the client's retries: {res.error}")
        text = res.text.strip()
        pred = None if it.dimension == "AesI" else extract_option(text, it.options)
        out.append(_record(it, f"api:{cfg.model}", text, pred, reasks=res.reasks))
    return out
