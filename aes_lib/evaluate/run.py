"""The evaluation run: build the benchmark, answer it with one model, judge, score, save.

Outputs (under ``out_dir``, see docs/CONTRACTS.md): ``eval/benchmark.jsonl``,
``eval/predictions_<model>.jsonl``, ``eval/results_<model>.json``, ``eval/results.csv`` (the
rows of every evaluated model), ``eval/config_<model>.json`` (the resolved config), and for
AesBench-layout input ``eval/responses_<model>/test_Aes{P,E,A1,I}.json``, AesBench's four
official response files.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aes_lib.config import Config, require
from aes_lib.evaluate import bench as B
from aes_lib.evaluate.score import mark, merge_results_csv, score_rows, summarise, unparsed
from aes_lib.models import CONVERSATIONS, IMAGE_MODES

log = logging.getLogger(__name__)


@dataclass
class EvalConfig(Config):
    out_dir: str = field(default="outputs", metadata={"help": "pipeline output folder"})
    bench: str = field(default="", metadata={
        "help": "benchmark file: benchmark.jsonl, an AesBench-layout JSON object or a score-dataset "
                "list [{image, gt_score}]; empty = <out_dir>/eval/benchmark.jsonl"})
    image_root: str = field(default="", metadata={
        "help": "folder the items' image paths are relative to; empty = <out_dir>/data for the "
                "project's benchmark, the benchmark file's folder otherwise"})
    key: str = field(default="", metadata={"help": "AesBench-layout key file with correct answers"})
    method: str = field(default="likelihood", metadata={
        "help": "multiple choice by option likelihood or by generate + option extractor"})
    mode: str = field(default="first-token", metadata={
        "help": "likelihood mode: first-token (the letters after the listed options: AesBench's letter "
                "format), full (each option's text after the listed options) or cloze (the question "
                "alone, each option's text scored as the whole answer, mean log-probability per token)"})
    reduce: str = field(default="sum", metadata={"help": "full mode: sum or mean token log-prob"})
    batch_images: int = field(default=8, metadata={"help": "images per likelihood batch"})
    batch_size: int = field(default=32, metadata={"help": "prompts per generate batch"})
    max_new_tokens: int = field(default=10, metadata={"help": "generate: tokens for a choice"})
    open_max_new_tokens: int = field(default=96, metadata={"help": "tokens for an AesI answer"})
    short_reply_tries: int = field(default=5, metadata={
        "help": "AesBench files: asks in all for a generated or API reply shorter than 3 characters "
                "(AesBench's scripts ask again with the same prompt, without a limit); when every ask "
                "is short the last reply is kept and counted under short_replies; 1 = never ask again"})
    short_reply_temperature: float = field(default=1.0, metadata={
        "help": "sampling temperature of those re-asks (greedy decoding would repeat the reply)"})
    judge: str = field(default="proxy-overlap", metadata={
        "help": "AesI judge: proxy-overlap (offline word overlap, not a GPT judge) or api"})
    judge_model: str = field(default="", metadata={"help": "judge model name (judge=api)"})
    base_url: str = field(default="", metadata={
        "help": "OpenAI-compatible endpoint for API models and the API judge; empty = OpenAI"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "NAME of the environment variable holding the API key (the key is never stored)"})
    api_settings: dict = field(default_factory=dict, metadata={
        "help": "more aes_lib.client.ClientConfig keys for API models and the judge, e.g. "
                "{requests_per_minute: 60, concurrency: 4, max_retries: 5}"})
    api_cache: str = field(default="", metadata={"help": "client cache file; empty = <out_dir>/eval/api_cache.db"})
    dtype: str = field(default="auto", metadata={"help": "model dtype: auto, float32, bf16, fp16"})
    device: str = field(default="", metadata={"help": "torch device; empty = cuda when available, else cpu"})
    image_mode: str = field(default="", metadata={
        "help": "pad | crop; empty = what the model folder's input_format.json (written by training) says, "
                "else pad (LLaVA-1.5's)"})
    conversation: str = field(default="", metadata={
        "help": "v1 | llava_v1 | checkpoint; empty = what the model folder's input_format.json says, else v1"})
    limit: int = field(default=0, metadata={"help": "evaluate only the first N items (0 = all)"})
    dimensions: list = field(default_factory=lambda: ["AesP", "AesE", "AesA", "AesI"], metadata={
        "help": "benchmark dimensions to evaluate (AesP, AesE, AesA, AesI)"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% CIs"})
    shuffle_images: bool = field(default=False, metadata={
        "help": "control: answer every item with another item's image (seeded permutation across "
                "source photos); records keep the item's own image and name the one shown"})
    seed: int = field(default=0, metadata={"help": "seed of the benchmark's option order and the bootstrap"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})

    def check(self) -> None:
        require(self.method in ("likelihood", "generate"), "method", "must be likelihood or generate")
        require(self.mode in ("first-token", "full", "cloze"), "mode", "must be first-token, full or cloze")
        require(self.reduce in ("sum", "mean"), "reduce", "must be sum or mean")
        require(self.judge in ("proxy-overlap", "api"), "judge", "must be proxy-overlap or api")
        require(self.judge != "api" or bool(self.judge_model), "judge_model", "needed when judge=api")
        require(bool(self.api_key_env.strip()) and not self.api_key_env.startswith("sk-"),
                "api_key_env", "must be the NAME of an environment variable, not a key")
        require(self.short_reply_temperature > 0, "short_reply_temperature",
                "must be above 0 (a greedy re-ask gives the same reply again)")
        for k in ("batch_images", "batch_size", "max_new_tokens", "open_max_new_tokens", "n_boot",
                  "short_reply_tries"):
            require(getattr(self, k) >= 1, k, "must be at least 1")
        require(self.limit >= 0, "limit", "must be 0 or more")
        require(self.image_mode in ("", *IMAGE_MODES), "image_mode", f"must be '' or one of {IMAGE_MODES}")
        require(self.conversation in ("", *CONVERSATIONS), "conversation",
                f"must be '' or one of {CONVERSATIONS}")
        bad = [d for d in self.dimensions if d not in ("AesP", "AesE", "AesA", "AesI")]
        require(not bad and bool(self.dimensions), "dimensions",
                f"must be a non-empty list of AesP, AesE, AesA, AesI (got {self.dimensions!r})")

    # derived paths
    @property
    def eval_dir(self) -> Path:
        return Path(self.out_dir) / "eval"

    @property
    def bench_path(self) -> Path:
        return Path(self.bench) if self.bench else self.eval_dir / "benchmark.jsonl"

    def client_cfg(self, model: str) -> dict[str, Any]:
        cfg: dict[str, Any] = {"api_key_env": self.api_key_env, **self.api_settings, "model": model,
                               "cache_path": self.api_cache or str(self.eval_dir / "api_cache.db")}
        if self.base_url:
            cfg["base_url"] = self.base_url
        return cfg


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _read_inputs(out_dir: str | Path):
    """The image records of ``data/manifest.json`` and the critiques of ``critiques/critiques.jsonl``."""
    from aes_lib.schema import Critique, read_jsonl, read_manifest

    images = read_manifest(Path(out_dir) / "data" / "manifest.json")
    return images, read_jsonl(Path(out_dir) / "critiques" / "critiques.jsonl", Critique)


@dataclass
class BenchConfig(Config):
    seed: int = field(default=0, metadata={"help": "seed of the option order"})
    split: str = field(default="test", metadata={"help": "split the benchmark is built from"})
    source_field: str = field(default="auto", metadata={
        "help": "image field of the 'source' breakdown: auto, source_package, category"})
    shuffle_scales: bool = field(default=True, metadata={
        "help": "shuffle ordered scales (Yes/No, good/fair/poor, high/medium/low) too"})
    prompt_version: str = field(default=B.BENCH_PROMPTS, metadata={"help": "question wording file"})

    def check(self) -> None:
        require(self.split in ("train", "val", "test"), "split", "must be train, val or test")


def build_bench(out_dir: str | Path = "outputs", seed: int = 0, source_field: str = "auto",
                split: str = "test", shuffle_scales: bool = True) -> Path:
    """``<out_dir>/eval/benchmark.jsonl`` from ``data/manifest.json`` and ``critiques/critiques.jsonl``;
    the settings are saved beside it as ``eval/benchmark_config.json``."""
    out_dir = Path(out_dir)
    cfg = BenchConfig.from_dict(seed=seed, split=split, source_field=source_field,
                                shuffle_scales=shuffle_scales)
    images, critiques = _read_inputs(out_dir)
    items = B.build_benchmark(images, critiques, seed=seed, split=split, source_field=source_field,
                              shuffle_scales=shuffle_scales)
    path = out_dir / "eval" / "benchmark.jsonl"
    B.write_benchmark(path, items)
    cfg.save(path.with_name("benchmark_config.json"))
    return path


def load_items(cfg: EvalConfig):
    """(format, items or score rows, image root) of the configured benchmark."""
    fmt = B.detect_format(cfg.bench_path)
    if fmt == "benchmark":
        items = B.read_benchmark(cfg.bench_path)
        root = Path(cfg.image_root) if cfg.image_root else Path(cfg.out_dir) / "data"
    elif fmt == "aesbench":
        items = B.load_aesbench(cfg.bench_path)
        root = Path(cfg.image_root) if cfg.image_root else cfg.bench_path.parent
        if cfg.key:
            key = B.load_aesbench_key(cfg.key, items)
            for it in items:
                it.answer = key.get(it.id, it.answer)
    else:
        items = B.load_score_dataset(cfg.bench_path)
        root = Path(cfg.image_root) if cfg.image_root else cfg.bench_path.parent
    if fmt != "scores":
        items = [it for it in items if it.dimension in cfg.dimensions]
    if cfg.limit:
        items = items[:cfg.limit]
    return fmt, items, root


def _load_local(model_path: str | Path, adapter: str | Path | None, cfg: EvalConfig):
    from aes_lib.models import load_model_and_processor

    device = cfg.device
    if not device:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model_and_processor(model_path, adapter=adapter, dtype=cfg.dtype, device=device,
                                    image_mode=cfg.image_mode or None, conversation=cfg.conversation or None)


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_hub_id(model: str | Path) -> bool:
    """``owner/name`` that is not an existing path: a Hugging Face hub id."""
    return not Path(model).exists() and bool(_HUB_ID.fullmatch(str(model))) \
        and not str(model).startswith(".")


def resolve_model_path(model: str | Path) -> Path | str:
    """A local model folder, or the folder of a hub id (``llava-hf/llava-1.5-7b-hf``) in the local
    Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``), found without the network. A hub id not
    in the cache is returned as is for ``from_pretrained`` to download, unless ``HF_HUB_OFFLINE``
    is set, which makes it an error saying how to fetch it."""
    if Path(model).exists():
        return Path(model)
    if not is_hub_id(model):
        raise FileNotFoundError(f"{model}: model folder not found (nor an 'owner/name' hub id)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(str(model), local_files_only=True))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(
                f"{model}: hub id not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                f"HF_HUB_OFFLINE is set: fetch it first (hf download {model})") from None
        log.info("%s: not in the local Hugging Face cache; from_pretrained will download it", model)
        return str(model)
    log.info("%s: resolved from the local Hugging Face cache to %s", model, folder)
    return folder


def tiny_model(cfg: EvalConfig) -> Path:
    """``--model tiny``: the embedded tiny LLaVA (random weights), built once under ``eval/``."""
    from aes_lib.models import build_tiny_llava

    path = cfg.eval_dir / "tiny_model"
    if not (path / "config.json").exists():
        build_tiny_llava(path, seed=cfg.seed)
    return path


def evaluate_model(cfg: EvalConfig, name: str, model_path: str | Path | None = None,
                   adapter: str | Path | None = None, api_model: str | None = None,
                   loaded: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Answer, judge and score the configured benchmark with one model; write its files.

    Exactly one of ``model_path`` (a saved LLaVA-family folder or a hub id resolved through the
    local Hugging Face cache, see :func:`resolve_model_path`; ``adapter`` optional; ``"tiny"``
    for the embedded tiny LLaVA),
    ``api_model`` (an OpenAI-compatible vision model) or ``loaded`` (``(model, processor)``).
    """
    from aes_lib.evaluate.answer import answer_api, answer_local, predict_scores

    cfg.check()   # a config built directly (not through from_dict) is validated too
    if sum(x is not None for x in (model_path, api_model, loaded)) != 1:
        raise ValueError("evaluate_model: give exactly one of model_path, api_model, loaded")
    if api_model is None:
        from aes_lib.threads import apply_thread_policy

        apply_thread_policy()   # see aes_lib/threads.py
    fname = safe_name(name)
    fmt, items, root = load_items(cfg)
    if cfg.shuffle_images:
        if fmt == "scores":
            raise ValueError("shuffle_images: a control for benchmarks with questions, not score datasets")
        own_image = {it.id: it.image for it in items}
        from aes_lib.evaluate.controls import image_permutation, source_photo_groups

        shown = image_permutation(items, cfg.seed, source_photo_groups(cfg.out_dir))
        items = [dataclasses.replace(it, image=shown[it.image]) for it in items]
    t0 = time.perf_counter()
    model = processor = None
    if model_path is not None and str(model_path) == "tiny":
        model_path = tiny_model(cfg)
    resolved = None
    if api_model is None:
        if model_path is not None:
            resolved = resolve_model_path(model_path)
        model, processor = loaded if loaded is not None else _load_local(resolved, adapter, cfg)
    t_load = time.perf_counter() - t0
    cfg.eval_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg.eval_dir / f"config_{fname}.json")
    summary: dict[str, Any] = {
        "model": name, "model_path": str(model_path or ""),
        "model_folder": str(resolved or ""), "adapter": str(adapter or ""),
        "api_model": api_model or "", "benchmark": str(cfg.bench_path), "format": fmt,
        "label": "measured by this run", "load_seconds": round(t_load, 3)}
    t1 = time.perf_counter()
    if fmt == "scores":
        if model is None:
            raise ValueError("score datasets need a local model (grade-word probabilities)")
        preds = predict_scores(items, model, processor, root, cfg.batch_images, cfg.progress)
        rows = score_rows(preds, name, cfg.bench_path.stem, cfg.seed, cfg.n_boot)
        summary.update(method="grade-word probabilities", n_items=len(preds))
    else:
        # AesBench's official scripts ask again for a reply under 3 characters; the project's own
        # benchmark asks for a bare letter
        tries = cfg.short_reply_tries if fmt == "aesbench" else 1
        if api_model is not None:
            preds = answer_api(items, cfg.client_cfg(api_model), root, cfg.progress, tries,
                               cfg.short_reply_temperature)
        else:
            run = lambda its: answer_local(  # noqa: E731
                its, model, processor, root, cfg.method, cfg.mode, cfg.reduce, cfg.batch_images,
                cfg.batch_size, cfg.max_new_tokens, cfg.open_max_new_tokens, cfg.progress, tries,
                cfg.short_reply_temperature, cfg.seed)
            mcq_items = [it for it in items if it.dimension != "AesI"]
            preds = run(mcq_items) if mcq_items else []
            t_mcq = time.perf_counter() - t1
            open_items = [it for it in items if it.dimension == "AesI"]
            preds += run(open_items) if open_items else []
        t_answer = time.perf_counter() - t1
        if api_model is not None:
            t_mcq = t_answer  # API requests run together; the rate covers both kinds
        n_mcq = sum(p["dimension"] != "AesI" for p in preds)
        label_predictions(items, preds)
        if cfg.shuffle_images:
            for p in preds:
                p["shown_image"], p["image"] = p["image"], own_image[p["id"]]
            summary.update(control="shuffled-images", control_note=(
                "the same model answering each item with another item's image"))
        mark(preds)
        open_preds = [p for p in preds if p["dimension"] == "AesI"]
        judge = judge_open_answers(cfg, items, preds)
        rows = summarise(preds, name, judge.name, cfg.seed, cfg.n_boot)
        summary.update(method=preds[0]["method"] if preds else cfg.method, judge=judge.name,
                       judge_note=("word overlap with the reference critique; an offline proxy, "
                                   "not a GPT judge" if judge.name == "proxy-overlap" else
                                   "OpenAI-compatible judge with rubric judge_rubric_v1"),
                       n_items=len(preds), n_mcq=n_mcq, n_open=len(open_preds),
                       answer_seconds=round(t_answer, 3), unparsed=unparsed(preds),
                       mcq_seconds=round(t_mcq, 3),
                       mcq_questions_per_second=round(n_mcq / t_mcq, 3) if t_mcq and n_mcq else None)
        if fmt == "aesbench":
            summary["short_replies"] = short_reply_counts(preds, tries)
            if not cfg.shuffle_images:   # a control's replies are no AesBench submission
                B.write_official_responses(cfg.eval_dir / f"responses_{fname}", items,
                                           {p["id"]: p["response"] for p in preds})
    summary["rows"] = rows
    return _save(cfg, name, preds, summary)


def label_predictions(items, preds: list[dict[str, Any]]) -> None:
    """Carry each item's ``annotator_kind`` (the critiques its answer or reference came from,
    e.g. ``simulated``) onto its prediction record, so results say where their truth came from."""
    kind = {it.id: it.annotator_kind for it in items}
    for p in preds:
        p["annotator_kind"] = kind.get(p["id"], "")


def judge_open_answers(cfg: EvalConfig, items, preds: list[dict[str, Any]]):
    """Judge the AesI answers that have a reference (sets ``judge`` and ``judge_name`` on each
    prediction); returns the judge."""
    from aes_lib.evaluate.judge import make_judge

    by_id = {it.id: it for it in items}
    judge = make_judge(cfg.judge, cfg.client_cfg(cfg.judge_model) if cfg.judge == "api" else None)
    with_ref = [p for p in preds if p["dimension"] == "AesI" and by_id[p["id"]].reference]
    for p, s in zip(with_ref, judge.score([by_id[p["id"]] for p in with_ref],
                                          [p["response"] for p in with_ref], cfg.progress)):
        p["judge"], p["judge_name"] = s, judge.name
    return judge


def _save(cfg: EvalConfig, name: str, preds: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """Write predictions, results JSON and the model's rows in results.csv; flag repeated answers."""
    from aes_lib.evaluate.judge import repeated_answers
    from aes_lib.evaluate.controls import per_item, photo_set_of
    from aes_lib.io import write_json
    from aes_lib.schema import write_jsonl

    fname = safe_name(name)
    questions = [p for p in preds if "dimension" in p]   # score-dataset rows have no questions
    summary["annotator_kinds"] = dict(Counter(p.get("annotator_kind") or "none (recorded ground truth)"
                                              for p in questions))
    summary["repeated_answers"] = repeated_answers(questions)
    if summary.get("format") == "benchmark":   # the project's own photos: numbers of different photo sets never compare
        summary.setdefault("photo_set", photo_set_of(cfg.out_dir))
    for flag in summary["repeated_answers"]:
        log.warning("%s: the same %s answer for %d of %d items: %r", name, flag["dimension"],
                    flag["count"], flag["of"], flag["response"][:80])
    cfg.eval_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(cfg.eval_dir / f"predictions_{fname}.jsonl", preds)
    write_json(cfg.eval_dir / f"results_{fname}.json", summary)
    merge_results_csv(cfg.eval_dir / "results.csv", summary["rows"])
    log.info("%s: %s", name, ", ".join(f"{r['dimension']} {r['metric']} {r['value']:.3f}"
                                       for r in summary["rows"] if r["group_by"] == "all"))
    return {**summary, "per_item": per_item(questions)}


def finish_run(cfg: EvalConfig, name: str, items, preds: list[dict[str, Any]],
               summary: dict[str, Any]) -> dict[str, Any]:
    """Mark, judge, score and save predictions made without a model (e.g. the blind prior)."""
    label_predictions(items, preds)
    mark(preds)
    judge = judge_open_answers(cfg, items, preds)
    rows = summarise(preds, name, judge.name, cfg.seed, cfg.n_boot)
    summary.update(judge=judge.name, n_items=len(preds), unparsed=unparsed(preds), rows=rows,
                   n_mcq=sum(p["dimension"] != "AesI" for p in preds),
                   n_open=sum(p["dimension"] == "AesI" for p in preds))
    cfg.save(cfg.eval_dir / f"config_{safe_name(name)}.json")
    return _save(cfg, name, preds, summary)


def short_reply_counts(preds: list[dict[str, Any]], tries: int) -> dict[str, Any]:
    """How AesBench's short-reply rule went: items asked again, re-asks sent in this run, and the
    items whose kept reply is still under 3 characters (written as given, logged)."""
    from aes_lib.evaluate.answer import MIN_REPLY_CHARS, is_short_reply

    kept = [p["id"] for p in preds if is_short_reply(p["response"])]
    if kept:
        log.warning("%d replies still shorter than %d characters after up to %d asks, kept as given "
                    "(first: %s)", len(kept), MIN_REPLY_CHARS, tries, kept[0])
    return {"min_chars": MIN_REPLY_CHARS, "tries": tries,
            "items_reasked": sum(p.get("reasks", 0) > 0 for p in preds),
            "reasks": sum(p.get("reasks", 0) for p in preds), "kept_short": kept}


def score_aesbench(responses: str | Path | list, key: str | Path, bench: str | Path | None = None,
                   name: str = "", out_dir: str | Path | None = None, seed: int = 0,
                   n_boot: int = 1000) -> dict[str, Any]:
    """Score AesBench-layout responses against a key file (``bench``: the annotation file, for
    the options; without it, responses must name letters). ``responses``: a file, a folder of
    the official ``test_Aes{P,E,A1,I}.json`` files, or a list of files."""
    from aes_lib.io import write_json
    from aes_lib.schema import BenchItem, option_letters
    from aes_lib.evaluate.answer import _record
    from aes_lib.evaluate.extract import extract_option
    from aes_lib.evaluate.score import check_key_file, check_rows

    check_key_file(key)
    files = B.response_files(responses)
    answers = B.read_aesbench_responses(files)
    if bench:
        items = B.load_aesbench(bench)
    else:  # no options known: every dimension has 26 placeholder options, letters only
        items = [BenchItem(id=i, image=i.rsplit(":", 1)[0], dimension=i.rsplit(":", 1)[1],
                           question="?", options=[] if i.endswith(":AesI") else
                           [f"\0{l}" for l in option_letters(26)], image_id=i.rsplit(":", 1)[0])
                 for i in answers]
    key_map = B.load_aesbench_key(key, items)
    preds = []
    # the dimensions the responses cover (one official file scores its dimension alone)
    answered = {i.rsplit(":", 1)[1] for i in answers}
    missing = [it.id for it in items if it.id in key_map and it.id not in answers
               and it.dimension in answered]
    if missing:
        raise ValueError(f"{', '.join(map(str, files))}: image {missing[0].rsplit(':', 1)[0]!r}: no "
                         f"{B.RESPONSE_KEYS[missing[0].rsplit(':', 1)[1]]} for a keyed question "
                         f"({len(missing)} missing in all)")
    for it in items:
        if it.id not in answers or (it.dimension != "AesI" and it.id not in key_map):
            continue
        text = answers[it.id]
        it.answer = key_map.get(it.id, "")
        pred = None if it.dimension == "AesI" else extract_option(text, it.options)
        preds.append(_record(it, "responses-file", text, pred))
    mark(preds)
    if not name:  # a single file: its stem; a folder or several files: the folder's name
        first = Path(responses if isinstance(responses, (str, Path)) else responses[0])
        single = isinstance(responses, (str, Path)) or len(responses) == 1
        name = first.stem if single and first.is_file() else (first if first.is_dir() else first.parent).name
    by_id = {it.id: it for it in items}
    from aes_lib.evaluate.judge import ProxyOverlapJudge

    judge = ProxyOverlapJudge()
    with_ref = [p for p in preds if p["dimension"] == "AesI" and by_id[p["id"]].reference]
    for p, s in zip(with_ref, judge.score([by_id[p["id"]] for p in with_ref], [p["response"] for p in with_ref])):
        p["judge"] = s
    rows = summarise(preds, name, judge.name, seed, n_boot)
    check_rows(rows, responses, key)
    summary = {"model": name, "responses": [str(f) for f in files], "key": str(key), "label": "measured by this run",
               "n_items": len(preds), "unparsed": unparsed(preds), "rows": rows}
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / f"results_{safe_name(name)}.json", summary)
        merge_results_csv(out / "results.csv", rows)
    return summary
