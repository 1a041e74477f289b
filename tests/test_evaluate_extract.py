"""The option extractor on a table of real-looking answers."""

import pytest

from aes_lib.evaluate.extract import extract_option

YN = ["Yes", "No"]
LEVELS = ["high", "medium", "low"]
TECH = ["blurred", "not blurred", "noisy", "overexposed"]
MOOD = ["joy", "sadness", "calm", "fear"]

TABLE = [
    # bare and decorated letters
    ("B", YN, "B"), ("b", YN, "B"), ("(C)", LEVELS, "C"), ("**B**", LEVELS, "B"), ("C.", LEVELS, "C"),
    ("A) high", LEVELS, "A"), ("B. medium", LEVELS, "B"), ("  D  ", MOOD, "D"), ("[A]", MOOD, "A"),
    # sentences naming a letter
    ("The answer is B.", LEVELS, "B"), ("Answer: (A)", LEVELS, "A"), ("I think the answer is C", LEVELS, "C"),
    ("Option B: medium", LEVELS, "B"), ("B is correct", LEVELS, "B"), ("the answer is c.", LEVELS, "C"),
    ("I choose D", MOOD, "D"), ("The correct option is A, because it is bright.", LEVELS, "A"),
    # option texts
    ("high", LEVELS, "A"), ("Medium", LEVELS, "B"), ("The aesthetic quality is low.", LEVELS, "C"),
    ("Yes, it is blurred.", YN, "A"), ("No.", YN, "B"), ("No, the photo is sharp", YN, "B"),
    ("The image is not blurred", TECH, "B"), ("It looks overexposed to me.", TECH, "D"),
    ("This image conveys a sense of calm.", MOOD, "C"),
    # unparseable: nothing, several options, a letter outside the options, prose starting with 'A'
    ("", LEVELS, None), ("A or B", LEVELS, None), ("D", LEVELS, None),
    ("A photo of a cat on a sofa", MOOD, None), ("It is blurred, and also noisy", TECH, None),
    ("I cannot tell from this image.", MOOD, None), ("Both high and low aspects", LEVELS, None),
    ("The answer is B or C.", LEVELS, None),
]


@pytest.mark.parametrize("answer,options,expected", TABLE)
def test_extract_option(answer, options, expected):
    assert extract_option(answer, options) == expected


def test_non_string_answer_is_unparsed():
    assert extract_option(None, YN) is None  # type: ignore[arg-type]
