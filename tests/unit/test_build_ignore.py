"""`.containerignore` patterns: docker's semantics (`*` within a component, `**` across, `!` exceptions,
last match wins, a matched directory excludes what is below it)."""
from __future__ import annotations

import pytest

from corert.build.ignore import IgnoreMatcher


@pytest.mark.parametrize("patterns, path, excluded", [
    (["*.md"], "README.md", True),
    (["*.md"], "docs/x.md", False),                 # `*` does not cross '/'
    (["**/*.md"], "docs/deep/x.md", True),
    (["**/*.md"], "README.md", True),               # `**/` also matches no directory at all
    (["docs"], "docs/a/b.txt", True),               # a matched dir excludes its contents
    (["docs"], "docsx/a", False),
    (["/build/"], "build/out.o", True),             # leading '/' and trailing '/' are cleaned away
    (["temp?"], "temp1", True),
    (["temp?"], "temp12", False),
    (["[a-c]*.log"], "b1.log", True),
    (["[a-c]*.log"], "d1.log", False),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/x/y/c", False),
    (["**"], "anything/at/all", True),
    (["*.md", "!README.md"], "README.md", False),   # an exception re-includes
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["!README.md", "*.md"], "README.md", True),    # the last matching line decides
    (["docs/**", "!docs/keep.txt"], "docs/keep.txt", False),
    (["docs/**", "!docs/keep.txt"], "docs/other.txt", True),
    (["# a comment", "", "  *.tmp  "], "x.tmp", True),
    (["# *.tmp"], "x.tmp", False),
    (["./sub/../secret"], "secret", True),
    ([], "x", False),
])
def test_patterns(patterns, path, excluded):
    assert IgnoreMatcher(patterns).excluded(path) is excluded


def test_containerignore_wins_over_dockerignore(tmp_path):
    (tmp_path / ".dockerignore").write_text("a\n")
    assert IgnoreMatcher.for_context(str(tmp_path)).excluded("a")
    (tmp_path / ".containerignore").write_text("b\n")
    m = IgnoreMatcher.for_context(str(tmp_path))
    assert m.excluded("b") and not m.excluded("a")


def test_no_ignore_file_excludes_nothing(tmp_path):
    assert not IgnoreMatcher.for_context(str(tmp_path)).excluded("anything")
