"""The Containerfile parser and docker's word rules (quotes, escapes, substitution)."""
from __future__ import annotations

import pytest

from corert.build.parser import BuildSyntaxError, parse
from corert.build.words import WordError, expand, split_words

TEXT = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
from $BASE AS base

RUN echo one \\
    two \\
# a comment inside the continuation
    three
COPY --chown=1:2 --chmod=0644 a b /dst/
CMD ["sh", "-c", "echo hi"]
ENTRYPOINT [not json
"""


def test_instructions_lines_forms_and_flags():
    ins = parse(TEXT, "Containerfile")
    assert [i.keyword for i in ins] == ["ARG", "FROM", "RUN", "COPY", "CMD", "ENTRYPOINT"]
    assert [i.line for i in ins] == [2, 3, 5, 9, 10, 11]
    run = ins[2]
    assert run.args == "echo one     two     three" and run.exec_form is None
    assert ins[3].flags == {"chown": "1:2", "chmod": "0644"} and ins[3].args == "a b /dst/"
    assert ins[4].exec_form == ["sh", "-c", "echo hi"]
    assert ins[5].exec_form is None   # not valid JSON: the shell form, as docker takes it
    assert ins[3].where == "Containerfile:9"


@pytest.mark.parametrize("text, message", [
    ("FROM busybox\nFROBNICATE x\n", "Containerfile:2: unknown instruction: FROBNICATE"),
    ("FROM busybox\nHEALTHCHECK NONE\n", "Containerfile:2: HEALTHCHECK is not supported"),
    ("RUN true\n", "Containerfile:1: the first instruction (after ARG) must be FROM"),
    ("FROM busybox\n\nRUN\n", "Containerfile:3: RUN requires at least one argument"),
    ("FROM busybox\nCOPY --from=x a b\n", "Containerfile:2: COPY --from is not supported"),
    ("FROM busybox\nCOPY --chown a b\n", "Containerfile:2: COPY --chown needs a value"),
    ("FROM busybox\nCMD [1, 2]\n", "Containerfile:2: the exec form must be a JSON array of strings"),
    ("# only a comment\n", "Containerfile: the file has no instructions"),
])
def test_syntax_errors_name_file_and_line(text, message):
    with pytest.raises(BuildSyntaxError) as e:
        parse(text, "Containerfile")
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


ENV = {"A": "x", "EMPTY": "", "SP": "a b"}


@pytest.mark.parametrize("text, words", [
    ("$A ${A} pre${A}post", ["x", "x", "prexpost"]),
    ("'$A' \"$A\" \\$A", ["$A", "x", "$A"]),
    ('"a  b" c', ["a  b", "c"]),
    ("$SP", ["a b"]),                          # an expanded value is not split again
    ("${MISSING:-dflt} ${EMPTY:-e} ${EMPTY-e}", ["dflt", "e", ""]),
    ("${A:+set} ${MISSING:+set}x", ["set", "x"]),
    ("${MISSING:-${A}}", ["x"]),
    ("$ alone", ["$", "alone"]),
])
def test_words(text, words):
    assert split_words(text, ENV) == words


def test_expand_keeps_spaces_and_errors_are_one_line():
    assert expand('hello   "big  world" $A', ENV) == "hello   big  world x"
    assert split_words("$A", None) == ["$A"]   # no env: no substitution (exec-form sources)
    for bad in ('"open', "'open", "${A", "${A%x}", "${MISSING:?must be set}"):
        with pytest.raises(WordError):
            split_words(bad, ENV)
