"""Notebook 04's AesI examples: answers beside their references, whole, chosen deterministically."""

from __future__ import annotations

import pytest

from aes_lib.evaluate.bench import write_benchmark
from aes_lib.evaluate.tables import aesi_examples
from aes_lib.schema import BenchItem, write_jsonl

LONG_REFERENCE = ("A quiet harbour at dusk; the horizon tilts to the left and pulls the eye out of the "
                  "frame, the highlights on the water are blown, yet the warm palette and the lone boat "
                  "give it a calm, nostalgic mood. Straighten the horizon and lower the exposure.\n"
                  "Second paragraph: the crop leaves too much empty sky above the boat.")


def _bench(out, n_open: int = 5) -> None:
    items = [BenchItem(id=f"i{k}", image=f"images/p{k}.png", dimension="AesI",
                       question=f"Describe the aesthetics of image {k}.",
                       reference=LONG_REFERENCE if k == 0 else f"reference critique {k}",
                       annotator_kind="simulated") for k in range(n_open)]
    items.append(BenchItem(id="m0", image="images/p0.png", dimension="AesP", question="Is it blurred?",
                           options=["Yes", "No"], answer="A"))
    write_benchmark(out / "eval" / "benchmark.jsonl", items)


def _pred(item_id: str, overall: float, response: str = "", dimension: str = "AesI") -> dict:
    scores = {"relevance": overall, "precision": overall / 2, "completeness": overall / 4, "overall": overall}
    return {"id": item_id, "dimension": dimension, "response": response or f"answer to {item_id}",
            "judge": scores if dimension == "AesI" else None, "judge_name": "proxy-overlap"}


def test_best_middle_and_worst_answers_beside_their_whole_references(tmp_path):
    _bench(tmp_path)
    long_answer = "The composition, which is poor. " * 12 + "\nA second line of the answer."
    preds = [_pred("i0", 1.0, long_answer), _pred("i1", 1.6), _pred("i2", 0.2), _pred("i3", 1.0),
             _pred("i4", 0.7), _pred("m0", 0.0, "A", dimension="AesP")]
    write_jsonl(tmp_path / "eval" / "predictions_finetuned.jsonl", preds)
    table = aesi_examples(tmp_path, "finetuned", n=3)
    # sorted by overall score, best first, ties by id (i0 before i3): i1, i0, i3, i4, i2
    assert list(table["item"]) == ["i1", "i3", "i2"]
    assert list(table["overall"]) == [1.6, 1.0, 0.2] and list(table["precision"]) == [0.8, 0.5, 0.1]
    assert set(table["judge"]) == {"proxy-overlap"} and set(table["reference from"]) == {"simulated"}
    assert table.loc[0, "reference critique"] == "reference critique 1"
    assert table.loc[1, "question"] == "Describe the aesthetics of image 3."
    whole = aesi_examples(tmp_path, "finetuned", n=5)
    assert list(whole["item"]) == ["i1", "i0", "i3", "i4", "i2"]
    assert whole.loc[1, "answer by finetuned"] == long_answer          # never cut
    assert whole.loc[1, "reference critique"] == LONG_REFERENCE
    assert aesi_examples(tmp_path, "finetuned", n=10).equals(whole)   # fewer items than asked: all
    assert list(aesi_examples(tmp_path, "finetuned", n=1)["item"]) == ["i1"]
    assert aesi_examples(tmp_path, "finetuned", n=3).equals(table)    # same files, same rows


def test_unjudged_answers_are_left_out_and_no_aesi_gives_an_empty_table(tmp_path):
    _bench(tmp_path)
    unjudged = {**_pred("i2", 0.0), "judge": None}
    write_jsonl(tmp_path / "eval" / "predictions_base.jsonl", [_pred("i1", 0.5), unjudged])
    assert list(aesi_examples(tmp_path, "base")["item"]) == ["i1"]
    write_jsonl(tmp_path / "eval" / "predictions_mcq-only.jsonl", [_pred("m0", 0.0, "A", dimension="AesP")])
    empty = aesi_examples(tmp_path, "mcq-only")
    assert empty.empty and "reference critique" in empty.columns
    with pytest.raises(FileNotFoundError, match="predictions_nobody.jsonl"):
        aesi_examples(tmp_path, "nobody")
    with pytest.raises(ValueError, match="n must be at least 1"):
        aesi_examples(tmp_path, "base", n=0)


def test_every_model_is_evaluated_in_the_format_notebook_03_trained_with(tmp_path):
    """The base model's folder records no input format: notebook 04 passes the training run's."""
    from aes_lib.evaluate import EvalConfig
    from aes_lib.evaluate.tables import training_input_format
    from aes_lib.io import write_json

    assert training_input_format(tmp_path) == {}
    write_json(tmp_path / "train" / "run" / "config.json", {"model": "tiny", "image_mode": "crop",
                                                            "conversation": "checkpoint"})
    fmt = training_input_format(tmp_path)
    assert fmt == {"image_mode": "crop", "conversation": "checkpoint"}
    cfg = EvalConfig.from_dict(out_dir=str(tmp_path), progress=False, **fmt)
    assert (cfg.image_mode, cfg.conversation) == ("crop", "checkpoint")
