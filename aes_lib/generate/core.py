"""Instruction generation: critiques -> refined critiques -> multi-typed instructions -> files.

Reads ``data/manifest.json`` and ``critiques/critiques.jsonl``; writes under
``instructions/``: ``instructions.jsonl`` (schema.Instruction, every split),
``llava_{train,val,test}.json``, ``messages_{train,val,test}.jsonl``, ``refined.jsonl``,
``stats.json``, ``rejects.jsonl`` and ``run.json`` (configs, prompt version and hashes, tokens,
cost). Two backends: ``offline`` (templates, deterministic) and ``openai`` (any
OpenAI-compatible server through :mod:`aes_lib.client`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from aes_lib.config import Config, require
from aes_lib.generate import offline
from aes_lib.generate.faithful import contradiction, instruction_contradiction
from aes_lib.generate.offline import BAND_JUDGMENT, PROMPTS_DIR, band, mcq_prompt
from aes_lib.io import sha256_text, write_json
from aes_lib.schema import (GRADE_TO_LEVEL, QTYPES, SPLITS, Critique, ImageRecord, Instruction,
                            option_letters, read_jsonl, read_manifest, write_jsonl)

log = logging.getLogger(__name__)

BACKENDS = ("offline", "openai")
OPEN_TYPES = ("level", "description", "interpretation", "suggestion", "conversation")
#: how a reject for contradicting the critique's ratings begins (counted in stats.json)
CONTRADICTS = "contradicts the critique"


@dataclass
class GenerateConfig(Config):
    backend: str = field(default="offline", metadata={"help": "offline (templates) | openai"})
    prompt_version: str = field(default="v2", metadata={
        "help": "prompt files: offline_<v>.yaml, refine_<v>.txt, assemble_<v>.txt in aes_lib/prompts"})
    perception_mcq: int = field(default=2, metadata={
        "help": "perception multiple-choice questions per critique"})
    empathy_mcq: int = field(default=2, metadata={"help": "empathy multiple-choice questions per critique"})
    defect_mcq: int = field(default=6, metadata={
        "help": "offline backend, prompts v2+: at most N multiple-choice items per critique about the "
                "concrete defects its text names (blurred, underexposed, ...) or their absence; 0 = none"})
    open_types: list = field(default_factory=lambda: list(OPEN_TYPES), metadata={
        "help": "other instruction types to assemble: level, description, interpretation, "
                "suggestion, conversation"})
    max_critiques: int = field(default=0, metadata={
        "help": "use only N critiques, taken round-robin over the splits; 0 = all"})
    send_image: bool = field(default=True, metadata={
        "help": "openai backend: attach the image (data URL) to the refine prompt"})
    unlisted_images: str = field(default="error", metadata={
        "help": "critiques whose image is not in the manifest: error | hash_split (split by a "
                "hash of the image id, 80/10/10; for imported critiques without images)"})
    dedupe: bool = field(default=True, metadata={"help": "drop instructions identical to an earlier one"})
    seed: int = field(default=0, metadata={"help": "seed of the offline generator's choices"})

    def check(self) -> None:
        require(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}")
        require(self.perception_mcq >= 0 and self.empathy_mcq >= 0, "perception_mcq",
                "must be 0 or more")
        require(self.defect_mcq >= 0, "defect_mcq", "must be 0 or more")
        bad = [x for x in self.open_types if x not in OPEN_TYPES]
        require(not bad, "open_types", f"unknown types {bad} (known: {', '.join(OPEN_TYPES)})")
        require(self.max_critiques >= 0, "max_critiques", "must be 0 or more")
        require(self.unlisted_images in ("error", "hash_split"), "unlisted_images",
                "must be error or hash_split")
        require(bool(self.prompt_version.strip()), "prompt_version", "must not be empty")

    def prompt_label(self) -> str:
        v = self.prompt_version
        return f"offline_{v}" if self.backend == "offline" else f"refine_{v}+assemble_{v}"

    def prompt_files(self) -> list[Path]:
        v = self.prompt_version
        names = [f"offline_{v}.yaml"] + ([f"refine_{v}.txt", f"assemble_{v}.txt"]
                                         if self.backend == "openai" else [])
        return [PROMPTS_DIR / n for n in names]


# --- inputs ---------------------------------------------------------------------------------

#: what to pass when critiques come without a dataset manifest (imported critiques)
NO_MANIFEST_HINT = ("for critiques imported without a dataset, pass --manifest none "
                    "--unlisted-images hash_split (Python: manifest=None, unlisted_images='hash_split')")


def load_images(manifest: str | Path | None) -> dict[str, ImageRecord]:
    """The manifest's images by id; a missing manifest is an error that says what to pass for
    critiques without a dataset (after ``aes collect import``)."""
    if manifest is None:
        return {}
    if not Path(manifest).exists():
        raise FileNotFoundError(f"{manifest}: file not found (no dataset manifest: build one with "
                                f"'aes data build', or {NO_MANIFEST_HINT})")
    return {r.id: r for r in read_manifest(manifest)}


def hash_split(image_id: str) -> str:
    x = int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16) % 10
    return "train" if x < 8 else ("val" if x == 8 else "test")


def resolve_images(critiques: list[Critique], images: dict[str, ImageRecord], cfg: GenerateConfig,
                   where: str) -> dict[str, tuple[str, str]]:
    """image id -> (image path relative to data/, split); raises on an unknown image."""
    out: dict[str, tuple[str, str]] = {}
    for c in critiques:
        if c.image_id in out:
            continue
        rec = images.get(c.image_id)
        if rec is not None:
            out[c.image_id] = (rec.file, rec.split)
        elif cfg.unlisted_images == "hash_split":
            image = str(c.extra.get("image") or c.image_id) if isinstance(c.extra, dict) else c.image_id
            out[c.image_id] = (image, hash_split(c.image_id))
    missing = [c for c in critiques if c.image_id not in out]
    if missing:
        c = missing[0]
        head = f"{where}: critique {c.id!r}: image_id {c.image_id!r} is not in the manifest"
        if images and len(missing) < len(critiques):
            # some critiques match the dataset, others do not: the dataset was rebuilt with
            # other photos after they were written (notebook 00's `photos`); the store keeps them
            kinds = Counter(m.annotator_kind for m in missing)
            raise ValueError(
                f"{head}: {len(missing)} of {len(critiques)} critiques ("
                + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                + f") name {len({m.image_id for m in missing})} images the dataset no longer has. It was "
                "rebuilt with other photos than they critique (notebook 00's `photos`, or 'aes data "
                "build --photos'); rebuild it with all photos (notebook 00 with `photos = []`, then 01 "
                "and 02), which the annotation store's critiques need")
        raise ValueError(f"{head} ({NO_MANIFEST_HINT})")
    return out


# --- drafts -> checked instructions ---------------------------------------------------------

def check_draft(d: dict[str, Any], c: Critique, t: dict) -> str | None:
    """The reason a draft must be rejected, or None. Multiple choice: 2+ unique non-empty
    options, exactly one correct (a valid index), and the correct answer agrees with the
    critique (its level, or the band of its attribute rating)."""
    if d["type"] == "conversation" or "turns" in d:
        for q, a in d["turns"]:
            if not q.strip() or not a.strip():
                return "empty question or answer"
        return None
    options = d["options"]
    if len(options) < 2 or any(not isinstance(o, str) or not o.strip() for o in options):
        return "needs at least two non-empty options"
    if len({o.strip().lower() for o in options}) != len(options):
        return f"options are not unique: {options}"
    if not 0 <= d["correct"] < len(options):
        return f"answer is not one of the {len(options)} options"
    if d["type"] == "level_mcq":
        if options[d["correct"]].strip().lower() != GRADE_TO_LEVEL[c.grade]:
            return (f"correct option {options[d['correct']]!r} disagrees with the critique's level "
                    f"{GRADE_TO_LEVEL[c.grade]!r}")
        return None
    if d["qtype"] not in QTYPES:
        return f"qtype {d['qtype']!r} is not one of {', '.join(QTYPES)}"
    attr = d["attribute"]
    if attr not in c.attributes:
        return f"attribute {attr!r} was not judged in the critique"
    wrong = contradiction(d.get("question", ""), options, d["correct"], attr, c, t)
    if wrong:
        return f"{CONTRADICTS}: {wrong}"
    if d["qtype"] == "yes-no" and sorted(o.lower() for o in options) != ["no", "yes"]:
        return "yes-no options must be exactly Yes and No (in either order)"
    if d.get("defect"):  # about a named defect: the answer must be the one the critique's text gives
        want = offline.defect_answer(d, c, t)
        if want is None:
            return f"the critique names no answer to this {attr} defect question"
        if options[d["correct"]] != want:
            return f"correct option {options[d['correct']]!r} disagrees with the critique, which says {want!r}"
        return None
    expected = BAND_JUDGMENT[band(c.attributes[attr]["rating"], t)]
    if d["judgment"] != expected:
        return (f"correct answer expresses a {d['judgment']!r} judgment of {attr}, the critique's "
                f"rating {c.attributes[attr]['rating']} is {expected!r}")
    return None


def draft_to_instruction(d: dict[str, Any], c: Critique, image: str, split: str, t: dict,
                         prompt_version: str, generator: str) -> Instruction:
    if "turns" in d:
        turns = d["turns"]
        conv = []
        for i, (q, a) in enumerate(turns):
            conv += [{"from": "human", "value": f"<image>\n{q}" if i == 0 else q},
                     {"from": "gpt", "value": a}]
        options, answer = [], ""
    else:
        options = d["options"]
        letter = option_letters(len(options))[d["correct"]]
        conv = [{"from": "human", "value": "<image>\n" + mcq_prompt(d["question"], options, t)},
                {"from": "gpt", "value": f"{letter}. {options[d['correct']]}"}]
        answer = letter
    return Instruction(id=f"{c.id}-{d['slot']}", image_id=c.image_id, image=image, type=d["type"],
                       qtype=d["qtype"], conversations=conv, split=split, attribute=d["attribute"],
                       options=list(options), answer=answer, critique_ids=[c.id],
                       prompt_version=prompt_version, generator=generator,
                       annotator_kind=c.annotator_kind)


def dedupe(instructions: list[Instruction]) -> tuple[list[Instruction], list[dict]]:
    """Keep the first of identical instructions (same image, same turns)."""
    seen: dict[str, str] = {}
    kept, rejects = [], []
    for ins in instructions:
        key = sha256_text(ins.image_id + "\0" + json.dumps(ins.conversations, sort_keys=True))
        if key in seen:
            rejects.append({"id": ins.id, "stage": "dedupe", "critique_id": ins.critique_ids[0],
                            "reason": f"duplicate of {seen[key]}", "type": ins.type})
        else:
            seen[key] = ins.id
            kept.append(ins)
    return kept, rejects


# --- exports and statistics -------------------------------------------------------------------

def to_llava(ins: Instruction) -> dict[str, Any]:
    return {"id": ins.id, "image": ins.image, "conversations": ins.conversations,
            "type": ins.type, "qtype": ins.qtype, "annotator_kind": ins.annotator_kind}


def to_messages(ins: Instruction) -> dict[str, Any]:
    """The ``messages`` + ``images`` layout (LLaMA-Factory sharegpt/OpenAI style, TRL)."""
    roles = {"human": "user", "gpt": "assistant"}
    return {"id": ins.id, "type": ins.type, "qtype": ins.qtype, "annotator_kind": ins.annotator_kind,
            "images": [ins.image],
            "messages": [{"role": roles[t["from"]], "content": t["value"]} for t in ins.conversations]}


def compute_stats(instructions: list[Instruction], n_rejected: int, prompt_version: str,
                  extra: dict[str, Any]) -> dict[str, Any]:
    qlen: dict[str, list[int]] = defaultdict(list)
    alen: dict[str, list[int]] = defaultdict(list)
    for ins in instructions:
        for t in ins.conversations:
            words = len(t["value"].replace("<image>", " ").split())
            (qlen if t["from"] == "human" else alen)[ins.type].append(words)
    return {
        "counts_by_type": dict(sorted(Counter(i.type for i in instructions).items())),
        "counts_by_qtype": dict(sorted(Counter(i.qtype for i in instructions).items())),
        "counts_by_split": {s: sum(i.split == s for i in instructions) for s in SPLITS},
        "counts_by_attribute": dict(sorted(Counter(i.attribute for i in instructions if i.attribute).items())),
        "answer_letters": dict(sorted(Counter(i.answer for i in instructions if i.answer).items())),
        "question_lengths": dict(sorted(qlen.items())),
        "answer_lengths": dict(sorted(alen.items())),
        "n_instructions": len(instructions),
        "n_images": len({i.image_id for i in instructions}),
        "n_rejected": n_rejected,
        "prompt_version": prompt_version,
        **extra,
    }


def write_outputs(out: Path, instructions: list[Instruction], refined: list[dict], rejects: list[dict],
                  stats: dict, run: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"instructions": out / "instructions.jsonl", "refined": out / "refined.jsonl",
             "rejects": out / "rejects.jsonl", "stats": out / "stats.json", "run": out / "run.json"}
    write_jsonl(paths["instructions"], instructions)
    write_jsonl(paths["refined"], refined)
    write_jsonl(paths["rejects"], rejects)
    for split in SPLITS:
        part = [i for i in instructions if i.split == split]
        paths[f"llava_{split}"] = write_json(out / f"llava_{split}.json", [to_llava(i) for i in part], indent=1)
        paths[f"messages_{split}"] = out / f"messages_{split}.jsonl"
        write_jsonl(paths[f"messages_{split}"], [to_messages(i) for i in part])
    write_json(paths["stats"], stats)
    write_json(paths["run"], run)
    return paths


# --- the pipeline -----------------------------------------------------------------------------

def default_paths(out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {"manifest": out_dir / "data" / "manifest.json",
            "critiques": out_dir / "critiques" / "critiques.jsonl",
            "data_dir": out_dir / "data", "out": out_dir / "instructions"}


def examples(out_dir: str | Path = "outputs", n: int = 8, split: str = "train") -> list[dict[str, str]]:
    """The first instruction of each type in ``instructions/llava_<split>.json`` (at most ``n``),
    as the training stage reads it: ``type``, ``qtype``, the first ``human`` and ``gpt`` turns."""
    from aes_lib.io import read_json

    rows, seen = [], set()
    for rec in read_json(default_paths(out_dir)["out"] / f"llava_{split}.json"):
        if rec["type"] not in seen and len(rows) < n:
            seen.add(rec["type"])
            turns = rec["conversations"]
            rows.append({"type": rec["type"], "qtype": rec.get("qtype", ""),
                         "human": turns[0]["value"], "gpt": turns[1]["value"]})
    return rows


def read_instructions(out_dir: str | Path = "outputs") -> list[Instruction]:
    """Every instruction of ``instructions/instructions.jsonl`` (all splits), validated."""
    return read_jsonl(default_paths(out_dir)["out"] / "instructions.jsonl", Instruction)


def read_rejects(out_dir: str | Path = "outputs") -> list[dict[str, Any]]:
    """The rejected items of ``instructions/rejects.jsonl``, each with its stage and reason."""
    path = default_paths(out_dir)["out"] / "rejects.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (run generate first)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_critiques(path: str | Path, cfg: GenerateConfig) -> list[Critique]:
    critiques = read_jsonl(path, Critique)
    if not critiques:
        raise ValueError(f"{path}: no critiques in the file")
    ids = Counter(c.id for c in critiques)
    dup = [k for k, n in ids.items() if n > 1]
    if dup:
        raise ValueError(f"{path}: critique id {dup[0]!r} appears {ids[dup[0]]} times")
    return critiques


def limit_critiques(critiques: list[Critique], images: dict[str, tuple[str, str]], n: int) -> list[Critique]:
    """The first ``n`` critiques taken round-robin over the splits (train, val, test), so a small
    run still fills every split; file order within a split. ``n == 0``: all of them."""
    if not n or n >= len(critiques):
        return critiques
    by_split = {s: [c for c in critiques if images[c.image_id][1] == s] for s in SPLITS}
    chosen: list[Critique] = []
    k = 0
    while len(chosen) < n:
        for s in SPLITS:
            if k < len(by_split[s]) and len(chosen) < n:
                chosen.append(by_split[s][k])
        k += 1
    keep = {c.id for c in chosen}
    return [c for c in critiques if c.id in keep]


def _client_for(cfg: GenerateConfig, client_cfg: Any, out: Path, api_key: str | None = None) -> Any:
    from aes_lib.client import ClientConfig, LLMClient

    client_cfg = client_cfg or ClientConfig()
    if client_cfg.cache_path is None:
        client_cfg = ClientConfig.from_dict({**client_cfg.to_dict(),
                                             "cache_path": str(out / "llm_cache.sqlite")})
        log.info("caching replies in %s", client_cfg.cache_path)
    return LLMClient(client_cfg, seed=cfg.seed, api_key=api_key)


def _refine_requests(critiques: list[Critique], images: dict[str, tuple[str, str]], data_dir: Path,
                     cfg: GenerateConfig, client: Any) -> Iterator[Any]:
    """The refine requests in critique order, each built (its image read and base64-encoded)
    only when it is consumed, so a caller that streams them holds one at a time. A missing image
    is an error here, before any request is built."""
    from aes_lib.generate.llm import refine_request

    paths: dict[str, Path | None] = {}
    for c in critiques:
        paths[c.id] = None
        if cfg.send_image:
            paths[c.id] = data_dir / images[c.image_id][0]
            if not paths[c.id].exists():
                raise FileNotFoundError(f"{paths[c.id]}: image of critique {c.id!r} not found (set "
                                        f"send_image=False to send the text only)")
    return (refine_request(c, cfg.prompt_version, paths[c.id], client.cfg.image_detail) for c in critiques)


def _assemble_requests(pairs: list[tuple[Critique, dict]], cfg: GenerateConfig, t: dict) -> list[Any]:
    from aes_lib.generate.llm import assemble_request

    return [assemble_request(c, r, cfg.prompt_version, t, cfg.perception_mcq, cfg.empathy_mcq)
            for c, r in pairs]


def _llm_refine_assemble(critiques: list[Critique], images: dict, data_dir: Path, cfg: GenerateConfig,
                         client: Any, t: dict, rejects: list[dict], progress: bool
                         ) -> list[tuple[Critique, dict, list[dict]]]:
    from aes_lib.generate.llm import reply_to_drafts

    by_id = {c.id: c for c in critiques}
    refined_pairs = []
    refine = list(_refine_requests(critiques, images, data_dir, cfg, client))
    for res in client.run(refine, progress=progress):
        c = by_id[res.key.split(":", 1)[1]]
        if res.ok:
            refined_pairs.append((c, res.parsed))
        else:
            rejects.append({"id": c.id, "stage": "refine", "critique_id": c.id, "reason": res.error})
    out = []
    pair_by_id = {c.id: (c, r) for c, r in refined_pairs}
    for res in client.run(_assemble_requests(refined_pairs, cfg, t), progress=progress):
        c, refined = pair_by_id[res.key.split(":", 1)[1]]
        if res.ok:
            out.append((c, refined, reply_to_drafts(res.parsed, tuple(cfg.open_types))))
        else:
            rejects.append({"id": c.id, "stage": "assemble", "critique_id": c.id, "reason": res.error})
    return out


def generate(cfg: GenerateConfig, out_dir: str | Path = "outputs", client_cfg: Any = None,
             manifest: str | Path | None = "default", critiques_path: str | Path | None = None,
             data_dir: str | Path | None = None, progress: bool = True,
             api_key: str | None = None) -> dict[str, Any]:
    """Run the stage; returns ``{"paths", "stats", "run"}``. ``manifest=None`` means no manifest
    (every image is then unlisted: use ``unlisted_images='hash_split'``). ``api_key`` is used in
    memory only; by default the key comes from the variable named by ``client_cfg.api_key_env``."""
    t0 = time.monotonic()
    cfg.check()
    paths = default_paths(out_dir)
    manifest = paths["manifest"] if manifest == "default" else manifest
    critiques_path = Path(critiques_path or paths["critiques"])
    data_dir = Path(data_dir or (Path(manifest).parent if manifest else paths["data_dir"]))
    out = paths["out"]
    t = offline.load_templates(f"offline_{cfg.prompt_version}")
    critiques = load_critiques(critiques_path, cfg)
    images = resolve_images(critiques, load_images(manifest), cfg, str(critiques_path))
    critiques = limit_critiques(critiques, images, cfg.max_critiques)
    rejects: list[dict] = []
    client = None
    if cfg.backend == "offline":
        generator = "offline"
        triples = []
        for c in critiques:
            r = offline.refine(c, t)
            triples.append((c, r, offline.assemble(c, r, t, cfg.seed, cfg.perception_mcq,
                                                   cfg.empathy_mcq, tuple(cfg.open_types),
                                                   cfg.defect_mcq)))
    else:
        client = _client_for(cfg, client_cfg, out, api_key)
        generator = f"openai:{client.cfg.model}"
        triples = _llm_refine_assemble(critiques, images, data_dir, cfg, client, t, rejects, progress)
    instructions = []
    for c, _, drafts in triples:
        image, split = images[c.image_id]
        for d in drafts:
            reason = check_draft(d, c, t)
            if reason:
                rejects.append({"id": f"{c.id}-{d['slot']}", "stage": "check", "critique_id": c.id,
                                "reason": reason, "type": d["type"]})
                continue
            instructions.append(draft_to_instruction(d, c, image, split, t, cfg.prompt_label(), generator))
    if cfg.dedupe:
        instructions, dup_rejects = dedupe(instructions)
        rejects += dup_rejects
    by_id = {c.id: c for c in critiques}
    kept_wrong = [i.id for i in instructions
                  if instruction_contradiction(i, by_id[i.critique_ids[0]], t)]  # 0 unless a check is missed
    drafted_wrong = sum(r["stage"] == "check" and r["reason"].startswith(CONTRADICTS) for r in rejects)
    usage = client.usage_summary() if client else {"requests_sent": 0, "prompt_tokens": 0,
                                                     "completion_tokens": 0, "total_tokens": 0,
                                                     "cost_usd": 0.0}
    if client:
        client.close()
    stats = compute_stats(instructions, len(rejects), cfg.prompt_label(), {
        "n_critiques": len(critiques), "generator": generator,
        "annotator_kinds": dict(Counter(c.annotator_kind for c in critiques)),
        "rejects_by_stage": dict(Counter(r["stage"] for r in rejects)),
        # questions or answers that contradict the critique's own ratings: drafted (and rejected),
        # and kept in the instructions (the goal, and what the offline generator gives: 0 and 0)
        "contradicted": {"drafted": drafted_wrong, "kept": len(kept_wrong), "kept_ids": kept_wrong[:20]}})
    run = {"stage": "generate", "backend": cfg.backend, "generator": generator,
           "generate_config": cfg.to_dict(),
           "client_config": client.cfg.to_dict() if client else None,
           "prompt_version": cfg.prompt_label(),
           "prompt_files": {p.name: sha256_text(p.read_text(encoding="utf-8")) for p in cfg.prompt_files()},
           "inputs": {"critiques": str(critiques_path), "manifest": str(manifest) if manifest else None},
           "usage": usage, "n_critiques": len(critiques), "n_instructions": len(instructions),
           "n_rejected": len(rejects), "seconds": round(time.monotonic() - t0, 3)}
    # a critique whose refine or assemble request failed (after retries and re-asks) is lost:
    # it gave no instruction at all; a rerun sends only those requests again (the rest is cached)
    lost = sorted({r["critique_id"] for r in rejects if r["stage"] in ("refine", "assemble")})
    run["n_critiques_lost"] = len(lost)
    refined = [r for _, r, _ in triples]
    written = write_outputs(out, instructions, refined, rejects, stats, run)
    log.info("%d instructions from %d critiques (%d rejected) -> %s", len(instructions),
             len(critiques), len(rejects), out)
    if lost:
        log.warning("%d of %d critiques lost (refine or assemble failed): see %s", len(lost),
                    len(critiques), Path(out) / "rejects.jsonl")
    if critiques and not instructions:  # the files are written (rejects included); the run failed
        reasons = Counter(r["reason"] for r in rejects).most_common(1)
        raise ValueError(f"no instruction came out of {len(critiques)} critiques: all were rejected"
                         + (f" (most often: {reasons[0][0]})" if reasons else "")
                         + f"; see {Path(out) / 'rejects.jsonl'}")
    return {"paths": written, "stats": stats, "run": run, "lost": lost}


class PlannedRequests:
    """A lazy, re-iterable sequence of requests: each pass builds them anew, one at a time."""

    def __init__(self, build: Callable[[], Iterator[Any]]):
        self._build = build

    def __iter__(self) -> Iterator[Any]:
        return self._build()


def plan_requests(cfg: GenerateConfig, out_dir: str | Path = "outputs", client_cfg: Any = None,
                  manifest: str | Path | None = "default", critiques_path: str | Path | None = None,
                  data_dir: str | Path | None = None) -> tuple[Any, PlannedRequests, PlannedRequests]:
    """(client, refine requests, assemble requests), as lazy sequences (:class:`PlannedRequests`):
    every pass over them builds the requests one at a time (refine requests encode their image
    then), so memory stays at one request whatever the number of critiques. Assemble requests
    exist for critiques whose refined reply is cached (a pass over them checks the cache, which
    builds each refine request once more); the others get a stand-in built from the offline
    refinement (for estimates), flagged by the key prefix ``estimate:``, after the real ones."""
    paths = default_paths(out_dir)
    manifest = paths["manifest"] if manifest == "default" else manifest
    critiques_path = Path(critiques_path or paths["critiques"])
    data_dir = Path(data_dir or (Path(manifest).parent if manifest else paths["data_dir"]))
    t = offline.load_templates(f"offline_{cfg.prompt_version}")
    critiques = load_critiques(critiques_path, cfg)
    images = resolve_images(critiques, load_images(manifest), cfg, str(critiques_path))
    critiques = limit_critiques(critiques, images, cfg.max_critiques)
    client = _client_for(cfg, client_cfg, paths["out"])
    _refine_requests(critiques, images, data_dir, cfg, client)   # missing images: an error now

    def assemble() -> Iterator[Any]:
        from aes_lib.generate.llm import assemble_request

        standins = []
        for c, req in zip(critiques, _refine_requests(critiques, images, data_dir, cfg, client)):
            hit = client.cached(req)
            if hit is not None:
                yield assemble_request(c, hit.parsed, cfg.prompt_version, t, cfg.perception_mcq,
                                       cfg.empathy_mcq)
            else:
                standins.append((c, offline.refine(c, t)))
        for req in _assemble_requests(standins, cfg, t):
            req.key = "estimate:" + req.key
            yield req

    return (client, PlannedRequests(lambda: _refine_requests(critiques, images, data_dir, cfg, client)),
            PlannedRequests(assemble))


def estimate(cfg: GenerateConfig, out_dir: str | Path = "outputs", client_cfg: Any = None,
             expected_completion_tokens: tuple[int, int] = (200, 900), **kw: Any) -> dict[str, Any]:
    """Dry run of the openai backend: requests, tokens and cost; sends nothing."""
    client, refine, assemble = plan_requests(cfg, out_dir, client_cfg, **kw)
    est = {"refine": client.estimate(refine, expected_completion_tokens[0]),
           "assemble": client.estimate(assemble, expected_completion_tokens[1])}
    known = est["refine"]["est_cost_usd"] is not None   # None: the model's price is unknown
    est["total_cost_usd"] = round(est["refine"]["est_cost_usd"] + est["assemble"]["est_cost_usd"], 4) \
        if known else None
    est["total_batch_cost_usd"] = round(est["refine"]["est_batch_cost_usd"]
                                        + est["assemble"]["est_batch_cost_usd"], 4) if known else None
    est["price"] = est["refine"]["price"]
    client.close()
    return est


def describe_estimate(est: dict[str, Any], model: str, paper_critiques: int = 88_000) -> str:
    """One line for a reader: the estimated cost of these critiques (and the Batch API's), and at
    the paper's number of critiques; or that the model's price is unknown."""
    n = est["refine"]["requests"]
    if est["total_cost_usd"] is None:
        return (f"estimated cost for these {n} critiques with {model}: unknown, {est['price']}; "
                f"tokens: {est['refine']['est_prompt_tokens'] + est['assemble']['est_prompt_tokens']:,} "
                f"prompt, {est['refine']['est_completion_tokens'] + est['assemble']['est_completion_tokens']:,} "
                f"completion (estimated)")
    per = est["total_cost_usd"] / max(1, n)
    return (f"estimated cost for these {n} critiques with {model}: ${est['total_cost_usd']:.4f} "
            f"(Batch API: ${est['total_batch_cost_usd']:.4f}); at the paper's {paper_critiques:,} "
            f"feedbacks: about ${per * paper_critiques:,.0f}; priced at {est['price']}")


def describe_usage(usage: dict[str, Any]) -> str:
    """Tokens and cost of the requests a run sent, or that the price is unknown."""
    cost = usage.get("cost_usd", 0.0)
    money = f"cost ${cost:.4f}" if cost is not None else f"cost unknown ({usage.get('price', '')})"
    return f"tokens {usage.get('total_tokens', 0)}, {money}"


def _from_first_uncached(client: Any, requests: Iterable[Any]) -> Iterator[Any] | None:
    """``requests`` from the first one without a cached reply on; None when all are cached."""
    rest = iter(requests)
    for req in rest:
        if client.cached(req) is None:
            return _then(req, rest)
    return None


def _then(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    # not itertools.chain([first], rest), whose argument tuple keeps `first` (and its image)
    # alive for the whole export
    box = [first]
    del first
    yield box.pop()
    yield from rest


def batch_export(cfg: GenerateConfig, path: str | Path, out_dir: str | Path = "outputs",
                 client_cfg: Any = None, max_requests: int | None = None,
                 max_bytes: int | None = None, **kw: Any) -> dict[str, Any]:
    """Export the next step's uncached requests as Batch API files: refine first; once every
    refinement is cached (after ``batch_import``), the assemble requests. Files stay within
    ``max_requests`` lines and ``max_bytes`` bytes (default: the Batch API's 50,000 and 200 MB);
    an export that does not fit one file is split into ``<stem>.part001<suffix>``, ..."""
    from aes_lib.client import BATCH_MAX_BYTES, BATCH_MAX_REQUESTS

    client, refine, assemble = plan_requests(cfg, out_dir, client_cfg, **kw)
    # streamed: requests are built as the export writes them, one at a time
    pending = _from_first_uncached(client, refine)
    if pending is not None:
        step, reqs = "refine", pending
    else:
        step, reqs = "assemble", (r for r in assemble if not r.key.startswith("estimate:"))
    export = client.batch_export(reqs, path, max_requests or BATCH_MAX_REQUESTS,
                                 max_bytes or BATCH_MAX_BYTES)
    client.close()
    return {"step": step, "requests": export["requests"], "path": str(path), "files": export["files"]}


def batch_import(cfg: GenerateConfig, path: str | Path | list, out_dir: str | Path = "outputs",
                 client_cfg: Any = None, **kw: Any) -> dict[str, Any]:
    """Import Batch API results files (one path or a list) into the cache; the next ``generate``
    run (or ``batch_export``) uses them."""
    client, refine, assemble = plan_requests(cfg, out_dir, client_cfg, **kw)
    known = itertools.chain(refine, (r for r in assemble if not r.key.startswith("estimate:")))
    result = client.batch_import(known, path)
    client.close()
    return result
