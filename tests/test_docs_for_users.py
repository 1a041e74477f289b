"""The docs speak to users: no references to issue numbers, the development machine's shared
folder or machine paths they do not have."""

from __future__ import annotations

import re

from conftest import REPO

FORBIDDEN = [re.compile(p) for p in (r"\bissues? ?#?\d+", r"\bshared/", r"PAPER_FACTS", r"/work/",
                                     r"\bwas not lent\b")]


def test_docs_cite_nothing_users_do_not_have():
    found = []
    for path in sorted((REPO / "docs").glob("*.md")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{path.name}:{n}: {line.strip()}" for rx in FORBIDDEN if rx.search(line)]
    assert found == []


def test_generate_doc_states_the_notebook_default():
    text = (REPO / "docs" / "generate.md").read_text(encoding="utf-8")
    nb = (REPO / "notebooks" / "02_generate.ipynb").read_text(encoding="utf-8")
    default = re.search(r'prompt_version = \\"(v\d+)\\"', nb).group(1)
    assert f'its own default is still `prompt_version = "v1"`' not in text
    assert f'default `prompt_version = "{default}"`' in text
    profiles = "".join(p.read_text() for p in (REPO / "aes_lib" / "profiles").glob("*.yaml"))
    assert ("prompt_version" in profiles) == ("every profile sets" in text)
