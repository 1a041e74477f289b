"""Option-likelihood scoring with shared-prefix batching (no ``generate``).

A multiple-choice question is answered by the model's probabilities of its options given the
prompt. Two speed levers make this cheap on a 7B model:

1. *one forward scores every option*: in ``first-token`` mode (the default) the options are told
   apart by their first answer token (the letters ``A``/``B``/... after ``ASSISTANT:``), so one
   forward pass of the prompt gives the log-probability of every option at once; in ``full``
   mode every option's text is a row and the sum (or mean) of its token log-probabilities counts;
2. *shared image prefix*: every prompt starts with the same system text and the image's 576
   image tokens. The prefix of each image runs once (with the vision tower), its key/value
   cache is copied to the questions of that image, and only the short question suffixes run
   as one batch (left-padded, explicit positions, logits only where needed).

:func:`score_shared_prefix` works on token ids (the GPU bench uses it on random ids);
:class:`OptionScorer` turns prompts and images into those ids with a model's processor.
torch is imported inside the functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

__all__ = ["Row", "Query", "score_shared_prefix", "OptionScorer", "answer_continuation"]


@dataclass
class Row:
    """One suffix scored after its image's prefix.

    ``targets`` > 0: the last ``targets`` tokens of ``suffix`` are the scored continuation and the
    row's result is their summed log-probability. ``targets`` == 0: the row's result is the
    log-probability of each of ``candidates`` as the token after the whole suffix.
    """

    owner: int                     # index of the prefix (image) this row continues
    suffix: list[int]
    targets: int = 0
    candidates: list[int] = field(default_factory=list)


@dataclass
class Query:
    """One question: an image, a prompt ending where the answer starts, and the continuations."""

    key: str
    image: str | Path
    prompt: str
    continuations: list[str]


def _model_device_dtype(model):
    p = next(model.parameters())
    return p.device, p.dtype


def score_shared_prefix(model, prefix_ids, pixel_values, rows: Sequence[Row], pad_id: int = 0,
                        prefix_mask=None) -> list[Any]:
    """Run each prefix once, copy its cache to its rows, score every row in one batched pass.

    ``prefix_ids``: ``[B, P]`` token ids (left-padded where ``prefix_mask`` is 0);
    ``pixel_values``: ``[B, 3, H, W]`` or ``None`` for a text-only model. Returns, per row, the
    summed target log-probability (float, ``targets`` > 0) or the list of candidate
    log-probabilities (``targets`` == 0).
    """
    import torch

    device, _ = _model_device_dtype(model)
    prefix_ids = prefix_ids.to(device)
    b, p = prefix_ids.shape
    if prefix_mask is None:
        prefix_mask = torch.ones_like(prefix_ids)
    prefix_mask = prefix_mask.to(device)
    prefix_pos = (prefix_mask.cumsum(1) - 1).clamp(min=0)
    kwargs = {} if pixel_values is None else {"pixel_values": pixel_values.to(device)}
    with torch.inference_mode():
        out = model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=prefix_pos,
                    use_cache=True, logits_to_keep=1, **kwargs)
        cache = out.past_key_values
        owner = torch.tensor([r.owner for r in rows], device=device)
        if b != len(rows) or not torch.equal(owner, torch.arange(b, device=device)):
            cache.batch_select_indices(owner)
        s = max(len(r.suffix) for r in rows)
        ids = torch.full((len(rows), s), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), s), dtype=torch.long)
        for i, r in enumerate(rows):
            if r.targets >= len(r.suffix):
                raise ValueError("a row's suffix must hold at least one token before its targets")
            ids[i, s - len(r.suffix):] = torch.tensor(r.suffix)
            mask[i, s - len(r.suffix):] = 1
        ids, mask = ids.to(device), mask.to(device)
        start = prefix_mask.sum(1)[owner].unsqueeze(1)           # first position after the prefix
        pos = start + (mask.cumsum(1) - 1).clamp(min=0)
        keep = max(r.targets for r in rows) + 1
        out = model(input_ids=ids, attention_mask=torch.cat([prefix_mask[owner], mask], 1),
                    position_ids=pos, past_key_values=cache, use_cache=True, logits_to_keep=keep)
        logp = torch.log_softmax(out.logits.float(), dim=-1)     # [R, keep, V]
    results: list[Any] = []
    for i, r in enumerate(rows):
        if r.targets == 0:
            results.append(logp[i, -1, r.candidates].tolist())
        else:
            tgt = torch.tensor(r.suffix[-r.targets:], device=logp.device)
            pred = logp[i, keep - 1 - r.targets: keep - 1]        # positions that predict them
            results.append(float(pred.gather(1, tgt.unsqueeze(1)).sum()))
    return results


def answer_continuation(processor, human_value: str, answer: str, prompt: str | None = None,
                        closed: bool = False) -> str:
    """The text the chat template puts between the generation prompt and the end of ``answer``.

    For LLaVA v1 that is ``" " + answer``; reading it off the template keeps the scorer right for
    other templates too. ``closed``: up to the end of the whole assistant turn instead, the
    template's end-of-turn marker included (``" No</s>"``, ``"No<|im_end|>"``), so that an option
    is scored as the complete answer and not as the start of a longer one.
    """
    from aes_lib.models import build_prompt

    human = [{"from": "human", "value": human_value}]
    prompt = prompt if prompt is not None else build_prompt(processor, human)
    full = build_prompt(processor, human + [{"from": "gpt", "value": answer}], add_generation_prompt=False)
    if full.startswith(prompt):
        at = full.find(answer, len(prompt))
        if at >= 0:
            return full[len(prompt):].rstrip() if closed else full[len(prompt): at + len(answer)]
    return " " + answer


class OptionScorer:
    """Scores :class:`Query` continuations with a local model, image prefixes shared.

    ``mode``: ``first-token`` (one row per question; the options' first tokens must differ,
    otherwise the question falls back to ``full``) or ``full`` (one row per option; ``reduce``
    ``sum`` or ``mean`` of its token log-probabilities).
    """

    def __init__(self, model, processor, mode: str = "first-token", reduce: str = "sum",
                 batch_images: int = 8):
        if mode not in ("first-token", "full"):
            raise ValueError(f"mode: {mode!r} is not first-token or full")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce: {reduce!r} is not sum or mean")
        self.model, self.processor, self.mode, self.reduce = model, processor, mode, reduce
        self.batch_images = max(1, int(batch_images))
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self._cont_cache: dict[tuple[str, str], list[int]] = {}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.image_token = getattr(processor, "image_token", "<image>")
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)

    # -- tokenisation ------------------------------------------------------------------------
    def _continuation_ids(self, prompt: str, cont: str) -> list[int]:
        key = (prompt[-48:], cont)
        if key not in self._cont_cache:
            tail = prompt[-48:]
            a = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
            b = self.tokenizer(tail + cont, add_special_tokens=False)["input_ids"]
            ids = b[len(a):] if b[:len(a)] == a else self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"continuation {cont!r} tokenises to nothing")
            self._cont_cache[key] = ids
        return self._cont_cache[key]

    def _encode_image(self, image: str | Path, prompt: str):
        """Pixel values and prompt ids (image tokens expanded) for one image."""
        from aes_lib.images import load_rgb

        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"{path}: image not found")
        rgb = load_rgb(path)   # upright, 8-bit RGB: aes_lib.images
        enc = self.processor(images=rgb, text=prompt, return_tensors="pt")
        return enc["pixel_values"][0], enc["input_ids"][0].tolist()

    def _prompt_ids(self, prompt: str, n_image_tokens: int) -> list[int]:
        expanded = prompt.replace(self.image_token, self.image_token * n_image_tokens)
        return self.tokenizer(expanded)["input_ids"]

    # -- scoring -----------------------------------------------------------------------------
    def score(self, queries: Sequence[Query], progress: bool = False) -> list[list[float]]:
        """Per query, one log-score per continuation (first-token log-probs, or sums/means)."""
        import torch
        from tqdm.auto import tqdm

        by_image: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_image.setdefault(str(q.image), []).append(i)
        images = list(by_image)
        results: list[list[float] | None] = [None] * len(queries)
        bar = tqdm(total=len(queries), desc="option likelihood", disable=not progress)
        for start in range(0, len(images), self.batch_images):
            chunk = images[start:start + self.batch_images]
            prefixes, pixels, rows, slots = [], [], [], []
            for owner, image in enumerate(chunk):
                qidx = by_image[image]
                pv, first_ids = self._encode_image(image, queries[qidx[0]].prompt)
                n_img = sum(1 for t in first_ids if t == self.image_token_id)
                all_ids = {qidx[0]: first_ids}
                for i in qidx[1:]:
                    all_ids[i] = self._prompt_ids(queries[i].prompt, n_img)
                if self._prompt_ids(queries[qidx[0]].prompt, n_img) != first_ids:
                    for i in qidx[1:]:  # the tokenizer alone disagrees with the processor: use it
                        all_ids[i] = self._encode_image(image, queries[i].prompt)[1]
                # the shared prefix: up to the last image token, common to every prompt
                split = max(j for j, t in enumerate(first_ids) if t == self.image_token_id) + 1 \
                    if n_img else 1
                for i in qidx:
                    split = min(split, len(all_ids[i]) - 1)
                    while all_ids[i][:split] != first_ids[:split]:
                        split -= 1
                if n_img and split <= max(j for j, t in enumerate(first_ids) if t == self.image_token_id):
                    raise ValueError(f"{image}: the prompts of this image differ before its image "
                                     "tokens, so they cannot share an image prefix")
                prefixes.append(first_ids[:split])
                pixels.append(pv)
                for i in qidx:
                    self._rows_for(queries[i], all_ids[i][split:], owner, i, rows, slots)
            plen = max(len(p) for p in prefixes)
            pid = torch.full((len(prefixes), plen), self.pad_id, dtype=torch.long)
            pmask = torch.zeros_like(pid)
            for j, p in enumerate(prefixes):
                pid[j, plen - len(p):] = torch.tensor(p)
                pmask[j, plen - len(p):] = 1
            _, dtype = _model_device_dtype(self.model)
            pv = torch.stack(pixels).to(dtype) if self.image_token_id is not None else None
            out = score_shared_prefix(self.model, pid, pv, rows, self.pad_id, pmask)
            for row, (qi, kind, k), value in zip(rows, slots, out):
                if kind == "first":
                    results[qi] = value
                else:
                    results[qi] = results[qi] or [0.0] * len(queries[qi].continuations)
                    results[qi][k] = value / row.targets if self.reduce == "mean" else value
            bar.update(sum(len(by_image[i]) for i in chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def _rows_for(self, q: Query, suffix: list[int], owner: int, qi: int, rows: list, slots: list):
        conts = [self._continuation_ids(q.prompt, c) for c in q.continuations]
        firsts = [c[0] for c in conts]
        if self.mode == "first-token" and len(set(firsts)) == len(firsts):
            rows.append(Row(owner=owner, suffix=suffix, targets=0, candidates=firsts))
            slots.append((qi, "first", 0))
            return
        for k, c in enumerate(conts):
            rows.append(Row(owner=owner, suffix=suffix + c, targets=len(c)))
            slots.append((qi, "full", k))
