"""docker's word processing for Containerfile arguments: quotes, backslash escapes, variable substitution.

Single quotes keep everything literal, double quotes keep spaces but expand variables, a backslash escapes
the next character. Variables: $NAME, ${NAME}, ${NAME:-word}, ${NAME-word}, ${NAME:+word}, ${NAME+word},
${NAME:?message}, ${NAME?message}; an unset variable is empty. RUN, CMD and ENTRYPOINT are not processed
here: their shell does it when the container runs.
"""
from __future__ import annotations

from corert.errors import UsageError


class WordError(UsageError):
    """A quoting or substitution error; the parser adds the file:line."""


def split_words(text: str, env: dict[str, str] | None) -> list[str]:
    """`text` as words (split on unquoted whitespace), quotes removed, variables expanded when env is given."""
    return _Lexer(text, env).words()


def expand(text: str, env: dict[str, str] | None) -> str:
    """`text` as one word: quotes removed and variables expanded, whitespace kept."""
    return _Lexer(text, env).single()


class _Lexer:
    def __init__(self, text: str, env: dict[str, str] | None) -> None:
        self.text = text
        self.env = env
        self.i = 0

    def _peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def words(self) -> list[str]:
        out: list[str] = []
        while True:
            while self._peek().isspace():
                self.i += 1
            if self.i >= len(self.text):
                return out
            out.append(self._word(stop_at_space=True))

    def single(self) -> str:
        return self._word(stop_at_space=False)

    def _word(self, *, stop_at_space: bool) -> str:
        buf: list[str] = []
        while self.i < len(self.text):
            c = self.text[self.i]
            if stop_at_space and c.isspace():
                break
            self.i += 1
            if c == "'":
                end = self.text.find("'", self.i)
                if end < 0:
                    raise WordError("unterminated single quote")
                buf.append(self.text[self.i:end])
                self.i = end + 1
            elif c == '"':
                buf.append(self._double_quoted())
            elif c == "\\":
                if self.i < len(self.text):
                    buf.append(self.text[self.i])
                    self.i += 1
                else:
                    buf.append("\\")
            elif c == "$" and self.env is not None:
                buf.append(self._variable())
            else:
                buf.append(c)
        return "".join(buf)

    def _double_quoted(self) -> str:
        buf: list[str] = []
        while True:
            if self.i >= len(self.text):
                raise WordError("unterminated double quote")
            c = self.text[self.i]
            self.i += 1
            if c == '"':
                return "".join(buf)
            if c == "\\" and self._peek() in ('"', "\\", "$"):
                buf.append(self._peek())
                self.i += 1
            elif c == "$" and self.env is not None:
                buf.append(self._variable())
            else:
                buf.append(c)

    def _name(self) -> str:
        start = self.i
        while self._peek() and (self._peek().isalnum() or self._peek() == "_"):
            self.i += 1
        return self.text[start:self.i]

    def _variable(self) -> str:
        assert self.env is not None
        if self._peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.i += 1
        name = self._name()
        if not name:
            raise WordError(f"bad substitution in {self.text!r}")
        if self._peek() == "}":
            self.i += 1
            return self.env.get(name, "")
        colon = self._peek() == ":"
        if colon:
            self.i += 1
        op = self._peek()
        if op not in ("-", "+", "?"):
            raise WordError(f"unsupported modifier in ${{{name}...}} in {self.text!r}")
        self.i += 1
        word = self._until_brace()
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if op == "-":
            return value if is_set else word   # type: ignore[return-value]
        if op == "+":
            return word if is_set else ""
        if not is_set:
            raise WordError(f"{name}: {word or 'is not set'}")
        return value   # type: ignore[return-value]

    def _until_brace(self) -> str:
        """The word of ${NAME:-word}: itself expanded, up to the matching brace."""
        buf: list[str] = []
        while True:
            c = self._peek()
            if not c:
                raise WordError(f"missing '}}' in {self.text!r}")
            self.i += 1
            if c == "}":
                return "".join(buf)
            if c == "$":
                buf.append(self._variable())
            elif c == "\\" and self._peek():
                buf.append(self._peek())
                self.i += 1
            else:
                buf.append(c)
