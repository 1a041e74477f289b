"""Training data: LLaVA JSON records -> token ids with assistant-only labels, and the collator.

Each conversation goes through the processor's own chat template. The template is rendered
turn by turn, so the text of every assistant answer is located exactly whatever the template;
every other token (system text, questions, image placeholders, the ``ASSISTANT:`` cue) gets the
label ``-100``. An end-of-sequence token closes each answer (appended when the template has none,
as LLaVA does) so the model learns to stop.

Samples that are too long are truncated; a sample whose image placeholders do not fit, or that
has no supervised token left, is dropped. Both are counted and reported before training starts,
and having nothing left to train on is an error, never a silent zero loss.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from aes_lib.io import read_json
from aes_lib.models import ROLE_OF, render_messages, to_messages

log = logging.getLogger(__name__)
IGNORE = -100


def read_llava_json(path: str | Path, limit: int = 0) -> list[dict[str, Any]]:
    """Read and check a LLaVA-layout JSON list; errors name the file, the record and the field."""
    path = Path(path)
    records = read_json(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of LLaVA records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        where = f"{path}: record {i} ({rec.get('id', '?') if isinstance(rec, dict) else '?'!r})"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected an object")
        for key in ("id", "image", "conversations"):
            if key not in rec:
                raise ValueError(f"{where}: field '{key}' missing")
        conv = rec["conversations"]
        if not isinstance(conv, list) or len(conv) < 2:
            raise ValueError(f"{where}: field 'conversations' must be a list of at least two turns")
        for j, turn in enumerate(conv):
            if not isinstance(turn, dict) or turn.get("from") not in ROLE_OF or \
                    not isinstance(turn.get("value"), str):
                raise ValueError(f"{where}: field 'conversations[{j}]' must be {{from: human|gpt, value: str}}")
    return records[:limit] if limit else records


def select_types(records: list[dict[str, Any]], types: Sequence[str], file: str = "") -> list[dict[str, Any]]:
    """The records whose ``type`` is in ``types`` (all of them when ``types`` is empty).

    A listed type that no record has is an error naming it and the types present.
    """
    if not types:
        return list(records)
    present = Counter(str(r.get("type", "")) for r in records)
    missing = [t for t in types if t not in present]
    if missing:
        raise ValueError(f"{file or 'training data'}: field 'type': no record of type {missing} "
                         f"(types present: {sorted(present)})")
    kept = [r for r in records if r.get("type") in set(types)]
    log.info("%s: training on %d of %d records (types %s)", file or "training data", len(kept),
             len(records), ", ".join(types))
    return kept


#: The line that opens the options block of a multiple-choice prompt (aes_lib/prompts/eval_mcq_v1.txt).
OPTIONS_INTRO = "\nChoose one from the following options:\n"
_LETTER_ANSWER = re.compile(r"^\s*([A-Z])\.\s+(.+?)\s*$", re.S)


def cloze_form(conversations: Sequence[dict[str, str]]) -> list[dict[str, str]] | None:
    """A multiple-choice conversation in its cloze form, or None when it is not one.

    The letter form lists the options and answers with a letter (``"B. No"``); the cloze form
    asks the question alone and answers with the chosen option's text (``"No"``), the
    formulation in which small language models are evaluated (and trained) best. Only a
    single-question conversation whose answer is one of its listed options is converted.
    """
    if len(conversations) != 2:
        return None
    human, answer = conversations
    if OPTIONS_INTRO not in human["value"]:
        return None
    question, block = human["value"].split(OPTIONS_INTRO, 1)
    options = {}
    for line in block.splitlines():
        m = _LETTER_ANSWER.match(line)
        if m:
            options[m.group(1)] = m.group(2)
    m = _LETTER_ANSWER.match(answer["value"])
    if not m or options.get(m.group(1)) != m.group(2):
        return None
    return [{"from": human["from"], "value": question}, {"from": answer["from"], "value": m.group(2)}]


def apply_mcq_form(records: list[dict[str, Any]], form: str, file: str = "") -> list[dict[str, Any]]:
    """The records with their multiple-choice conversations in ``form`` (letter | cloze | both).

    ``letter`` keeps them as generated; ``cloze`` replaces each by :func:`cloze_form`; ``both``
    keeps it and adds its cloze twin right after it (id suffixed ``:cloze``). Records that are not
    multiple choice stay as they are; the count converted is logged.
    """
    if form == "letter":
        return list(records)
    if form not in ("cloze", "both"):
        raise ValueError(f"mcq_form: {form!r} is not letter, cloze or both")
    out, converted = [], 0
    for rec in records:
        cloze = cloze_form(rec["conversations"])
        if cloze is None:
            out.append(rec)
            continue
        converted += 1
        twin = {**rec, "id": f"{rec['id']}:cloze" if form == "both" else rec["id"], "conversations": cloze}
        out.extend([rec, twin] if form == "both" else [twin])
    log.info("%s: %d multiple-choice records in %s form", file or "training data", converted,
             "letter and cloze" if form == "both" else "cloze")
    return out


def conversation_segments(processor, conversations: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, supervised)`` pieces, in order.

    The pieces concatenate to the full rendered text; ``supervised`` marks assistant answers.
    Raises ValueError when the template is not prefix-consistent (answers cannot be located).
    """
    messages = to_messages(conversations)
    segments: list[tuple[str, bool]] = []
    prev = ""

    def extend(text: str, supervised: bool, what: str) -> None:
        nonlocal prev
        if not text.startswith(prev):
            raise ValueError(f"the chat template does not render {what} as a continuation of the "
                             "earlier turns, so the assistant tokens cannot be located")
        if len(text) > len(prev):
            segments.append((text[len(prev):], supervised))
        prev = text

    for k, msg in enumerate(messages):
        if msg["role"] == "assistant":
            extend(render_messages(processor, messages[:k], True) if k else "", False,
                   f"the generation cue of turn {k}")
            extend(render_messages(processor, messages[:k + 1], False), True, f"turn {k}")
        else:
            extend(render_messages(processor, messages[:k + 1], False), False, f"turn {k}")
    return segments


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    drop_reason: str = ""     # "" (usable) | "image_cut" | "no_supervised"


def encode_conversation(processor, conversations: Sequence[dict[str, str]], n_image_tokens: int,
                        max_length: int) -> Encoded:
    """Token ids and labels for one conversation (``drop_reason`` says when it is unusable).

    The whole rendered text is tokenized at once (as at inference, so the prompt's tokens are
    exactly those ``processor(images, text=prompt)`` gives), and a token is supervised when it
    starts inside an assistant answer. Each ``<image>`` placeholder becomes ``n_image_tokens``.
    """
    tok = processor.tokenizer
    image_id = processor.image_token_id if hasattr(processor, "image_token_id") else \
        tok.convert_tokens_to_ids("<image>")
    spans, text = [], ""
    for piece, supervised in conversation_segments(processor, conversations):
        if supervised and tok.eos_token and tok.eos_token not in piece:
            piece = piece.rstrip() + tok.eos_token  # LLaVA closes every answer with </s>
        if supervised:
            spans.append((len(text), len(text) + len(piece)))
        text += piece
    add_bos = tok.bos_token is not None and not text.startswith(tok.bos_token)
    enc = tok(text, add_special_tokens=add_bos, return_offsets_mapping=True)
    ids: list[int] = []
    labels: list[int] = []
    for t, (start, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
        if t == image_id:
            ids.extend([t] * n_image_tokens)
            labels.extend([IGNORE] * n_image_tokens)
            continue
        inside = any(a <= start < b for a, b in spans) and not (start == 0 and t == tok.bos_token_id)
        ids.append(t)
        labels.append(t if inside else IGNORE)
    truncated = len(ids) > max_length
    if truncated:
        last_image = max((j for j, t in enumerate(ids) if t == image_id), default=-1)
        if last_image >= max_length:  # cutting through the image placeholders breaks the model
            return Encoded(ids[:max_length], labels[:max_length], True, "image_cut")
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels[1:]):
        return Encoded(ids, labels, truncated, "no_supervised")
    return Encoded(ids, labels, truncated)


def masked_view(processor, conversations: Sequence[dict[str, str]], n_image_tokens: int = 1,
                mark: tuple[str, str] = ("[[", "]]")) -> str:
    """The training text of a conversation with the supervised (assistant) tokens bracketed.

    Shows exactly what the loss sees: everything outside the brackets has label -100.
    """
    enc = encode_conversation(processor, conversations, n_image_tokens, 10 ** 9)
    tok, out, run, inside = processor.tokenizer, [], [], False
    for t, label in zip(enc.input_ids, enc.labels):
        sup = label != IGNORE
        if sup != inside and run:
            text = tok.decode(run)
            out.append(f"{mark[0]}{text}{mark[1]}" if inside else text)
            run = []
        inside = sup
        run.append(t)
    if run:
        text = tok.decode(run)
        out.append(f"{mark[0]}{text}{mark[1]}" if inside else text)
    return "".join(out)


def check_length_holds_image(max_length: int, n_image_tokens: int, file: str = "") -> None:
    """A sequence of ``max_length`` tokens must hold the image tokens, the BOS and an answer token."""
    if max_length < n_image_tokens + 2:
        raise ValueError(f"{file or 'training data'}: max_length={max_length} cannot hold the model's "
                         f"{n_image_tokens} image tokens per image (plus the prompt and an answer): raise "
                         f"max_length well above {n_image_tokens} (the LLaVA-1.5 recipe uses 2048 for 576)")


def count_image_tokens(processor, image) -> int:
    """How many placeholder tokens the processor expands ``<image>`` into for ``image``."""
    out = processor(images=image, text=processor.image_token, return_tensors="np")
    return int((out["input_ids"][0] == processor.image_token_id).sum())


@dataclass
class DataStats:
    """What the encoder kept and dropped; saved as data_stats.json beside every checkpoint."""

    file: str = ""
    n_records: int = 0
    n_kept: int = 0
    n_truncated: int = 0                 # kept, but cut at max_length
    n_dropped_truncated: int = 0         # image placeholders did not fit in max_length
    n_dropped_no_supervised: int = 0     # no assistant token left (e.g. a template mismatch)
    dropped_ids: list[str] = field(default_factory=list)
    max_length: int = 0
    n_image_tokens: int = 0
    tokens_total: int = 0
    supervised_tokens_total: int = 0
    length_mean: float = 0.0
    length_max: int = 0
    counts_by_type: dict[str, int] = field(default_factory=dict)
    counts_by_annotator_kind: dict[str, int] = field(default_factory=dict)   # e.g. {"simulated": 120}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LlavaDataset:
    """Encoded samples (token ids, labels, image path) of one LLaVA JSON file."""

    def __init__(self, processor, records: list[dict[str, Any]], image_root: str | Path,
                 max_length: int, file: str = "", max_dropped_fraction: float = 1.0):
        from aes_lib.images import load_rgb

        self.processor, self.image_root = processor, Path(image_root)
        if not records:
            raise ValueError(f"{file or 'training data'}: no records to train on")
        for rec in records:
            if not (self.image_root / rec["image"]).exists():
                raise FileNotFoundError(f"{self.image_root / rec['image']}: image of record "
                                        f"{rec['id']!r} in {file or 'the data'} not found")
        n_image = count_image_tokens(processor, load_rgb(self.image_root / records[0]["image"]))
        check_length_holds_image(max_length, n_image, file)
        stats = DataStats(file=str(file or "training data"), n_records=len(records), max_length=max_length,
                          n_image_tokens=n_image,
                          counts_by_type=dict(Counter(str(r.get("type", "")) for r in records)),
                          counts_by_annotator_kind=dict(Counter(str(r.get("annotator_kind") or "unknown")
                                                                for r in records)))
        self.samples: list[tuple[Encoded, dict[str, Any]]] = []
        for rec in records:
            enc = encode_conversation(processor, rec["conversations"], n_image, max_length)
            if enc.drop_reason:
                if enc.drop_reason == "image_cut":
                    stats.n_dropped_truncated += 1
                else:
                    stats.n_dropped_no_supervised += 1
                stats.dropped_ids.append(str(rec["id"]))
                continue
            stats.n_truncated += enc.truncated
            stats.tokens_total += len(enc.input_ids)
            stats.supervised_tokens_total += sum(label != IGNORE for label in enc.labels[1:])
            self.samples.append((enc, rec))
        stats.n_kept = len(self.samples)
        if self.samples:
            lengths = self.lengths()
            stats.length_mean, stats.length_max = sum(lengths) / len(lengths), max(lengths)
        self.stats = stats
        self._report(max_dropped_fraction)

    def _report(self, max_dropped_fraction: float) -> None:
        s = self.stats
        dropped = s.n_dropped_truncated + s.n_dropped_no_supervised
        log.info("%s: %d records, %d kept (%d truncated at %d tokens), %d dropped (%d too long for "
                 "the image tokens, %d with no supervised token), %d supervised tokens",
                 s.file, s.n_records, s.n_kept, s.n_truncated, s.max_length, dropped,
                 s.n_dropped_truncated, s.n_dropped_no_supervised, s.supervised_tokens_total)
        if s.n_kept == 0 and s.n_dropped_truncated == s.n_records:
            raise ValueError(f"{s.file}: max_length={s.max_length} cuts the {s.n_image_tokens} image tokens "
                             f"of every one of the {s.n_records} samples (the prompt before and around "
                             "them does not fit): raise max_length")
        if s.n_kept == 0:
            raise ValueError(f"{s.file}: none of the {s.n_records} samples has a supervised "
                             "(assistant) token left: training would learn nothing. Check the chat "
                             "template and max_length.")
        if dropped > max_dropped_fraction * s.n_records:
            raise ValueError(f"{s.file}: {dropped} of {s.n_records} samples dropped (more than "
                             f"max_dropped_fraction={max_dropped_fraction}); first: {s.dropped_ids[:5]}")
        if dropped:
            log.warning("%s: dropped samples %s", s.file, s.dropped_ids[:10])

    def __len__(self) -> int:
        return len(self.samples)

    def lengths(self) -> list[int]:
        return [len(enc.input_ids) for enc, _ in self.samples]

    def __getitem__(self, i: int) -> dict[str, Any]:
        from aes_lib.images import load_rgb

        enc, rec = self.samples[i]
        pixels = self.processor.image_processor(images=load_rgb(self.image_root / rec["image"]),
                                                return_tensors="pt")["pixel_values"][0]
        return {"input_ids": enc.input_ids, "labels": enc.labels, "pixel_values": pixels}


class Collator:
    """Right-pads a list of samples into a batch (labels -100 on padding)."""

    def __init__(self, pad_token_id: int | None):
        self.pad = 0 if pad_token_id is None else int(pad_token_id)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(s["input_ids"]) for s in samples)
        ids = torch.full((len(samples), width), self.pad, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, s in enumerate(samples):
            n = len(s["input_ids"])
            ids[row, :n] = torch.tensor(s["input_ids"])
            labels[row, :n] = torch.tensor(s["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "pixel_values": torch.stack([s["pixel_values"] for s in samples])}


def step_indices(n: int, global_batch: int, step: int, seed: int, lengths: Sequence[int] | None = None
                 ) -> list[int]:
    """Sample indices of optimizer step ``step`` (0-based): a seeded shuffle per epoch.

    Depends only on (n, global_batch, step, seed), so a resumed run sees exactly the data an
    uninterrupted one would. The last incomplete global batch of each epoch is skipped. With
    ``lengths`` the indices of the step are sorted by length (less padding per micro-batch).
    """
    import numpy as np

    per_epoch = n // global_batch
    if per_epoch == 0:
        raise ValueError(f"{n} training samples is fewer than one global batch ({global_batch}); "
                         "lower global_batch_size")
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    idx = [int(i) for i in perm[k * global_batch:(k + 1) * global_batch]]
    if lengths is not None:
        idx.sort(key=lambda i: (lengths[i], i))
    return idx
