"""Streaming sentence splitter: a reply's Markdown, fed token by token, cut into what to say.

    splitter = SentenceSplitter(read_code=False)
    for piece in reply_stream:
        for sentence in splitter.feed(piece):
            speak(sentence.text)
    for sentence in splitter.flush():      # the reply ended
        speak(sentence.text)

A sentence is emitted the moment it is known to be complete, not when the reply
ends. What it does with Markdown (one line at a time, like the renderer):

- Sentences end at ``.``, ``!``, ``?`` or ``…`` followed by a space and a word
  that does not start in lower case (closing quotes and brackets stay with the
  sentence), and at the end of a line: list items, headings and paragraphs are
  each spoken on their own. So a sentence is out one token after its full stop.
- Abbreviations do not end a sentence: titles and the like ("Dr.", "e.g.", "vs.")
  never, single-letter initials ("J. R. R. Tolkien") never, and "etc.", "U.S." or
  "p.m." not before a lower-case word ("the U.S. economy"). Numbers are safe:
  "3.14" has no space after its dot and "1,000" none after its comma; list numbers
  ("2. Buy milk") are markers, not sentences.
- To start speaking sooner, the first unit of a reply is cut short: at a clause
  break (", ", "; ", ": ", " - ") after two words or more, before a joining word
  ("and", "that", "to", "with"...) after three or more, or after eight words,
  whichever comes first ("One day," / "The Moon is a celestial body" / "that
  orbits Earth."). The rest follows without a pause, synthesised while the first
  unit plays. A sentence running past :data:`LONG_CHARS` is cut at its last
  clause break. Such units have ``final=False`` (no pause after them).
- Code blocks and tables are not read aloud: a fenced block is announced when it
  opens ("Code block in Python.") and then skipped; a table is summarised when it
  ends ("A table with 3 rows."). With ``read_code`` each code line, and each table
  row (cells joined by commas), is read instead.
- Inline Markdown is stripped (emphasis, inline code marks, headings, quotes,
  links keep their text, bare URLs become their host name, images their alt
  text, emoji are dropped); numbers, currency and units are left to Piper's
  espeak-ng front end, which reads them well.

Pure Python, no I/O; one splitter per reply (``reset()`` reuses it).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The first unit of a reply: cut early so that speech starts sooner (a short unit
# synthesises in tens of milliseconds; a whole sentence can take several hundred).
# "of" is no joining word: it binds too tightly ("a pot | of water").
FIRST_MIN_WORDS = 2
FIRST_MAX_WORDS = 8
JOINING_WORDS = frozenset(
    ("and", "but", "or", "so", "because", "that", "which", "who", "when", "while", "where",
     "if", "to", "with", "for", "in", "on", "at", "from", "by", "about", "as", "into")
)  # fmt: skip
LONG_CHARS = 200  # cut at a clause break past this
HARD_CHARS = 320  # cut at a space past this, clause or not
LINE_HEAD_CHARS = 10  # what a line start needs to be told apart: "> - [x] " is 8

TERMINATORS = ".!?…"
CLOSERS = "\"')]}*_`»”’"
# Never end a sentence (lower case, without the final dot).
NEVER_END = frozenset(
    ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "cf", "fig",
     "approx", "ca", "dept", "gen", "gov", "lt", "col", "sgt", "capt", "rev", "hon", "vol", "pp",
     "eq", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
)  # fmt: skip
LANGUAGES = {
    "py": "Python", "python": "Python", "python3": "Python", "js": "JavaScript",
    "javascript": "JavaScript", "jsx": "JavaScript", "ts": "TypeScript",
    "typescript": "TypeScript", "tsx": "TypeScript", "sh": "shell", "bash": "shell",
    "shell": "shell", "zsh": "shell", "console": "shell", "fish": "shell", "c": "C",
    "cpp": "C++", "c++": "C++", "cc": "C++", "h": "C", "cs": "C sharp", "csharp": "C sharp",
    "rs": "Rust", "rust": "Rust", "go": "Go", "golang": "Go", "java": "Java",
    "kt": "Kotlin", "kotlin": "Kotlin", "rb": "Ruby", "ruby": "Ruby", "php": "PHP",
    "json": "JSON", "yaml": "YAML", "yml": "YAML", "toml": "TOML", "ini": "INI",
    "sql": "SQL", "html": "HTML", "xml": "XML", "css": "CSS", "md": "Markdown",
    "markdown": "Markdown", "lua": "Lua", "r": "R", "swift": "Swift", "dockerfile":
    "Dockerfile", "makefile": "Makefile", "diff": "diff", "powershell": "PowerShell",
    "ps1": "PowerShell", "hs": "Haskell", "haskell": "Haskell",
}  # fmt: skip
KEPT_SYMBOLS = frozenset("°℃℉")  # Piper reads these
PLAIN_LANGUAGES = frozenset({"", "text", "txt", "plain", "plaintext", "output"})

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_MARKER = re.compile(r"^\s*(?:#{1,6}\s+|>\s?|[-*+]\s+(?:\[[ xX]\]\s+)?|\d{1,3}[.)]\s+)+")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_URL = re.compile(r"\bhttps?://([^/\s)>\]]+)[^\s)>\]]*")
_HTML = re.compile(r"</?[a-zA-Z][^>]*>")
_EMPHASIS = re.compile(r"(\*\*|~~|\*)(?=\S)(.+?)(?<=\S)\1|(?<!\w)(__|_)(?=\S)(.+?)(?<=\S)\3(?!\w)")
_CLAUSE = re.compile(r"[,;:](?=\s)|\s[-–—](?=\s)")
_WORD = re.compile(r"\S+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")


@dataclass(frozen=True)
class Sentence:
    """One unit to speak: ``final`` unless it was cut at a clause break."""

    text: str
    final: bool = True
    kind: str = "text"  # "text", "code" (an announcement or a code line), "table"


def speakable(text: str) -> str:
    """Inline Markdown to plain words; empty when nothing is left worth saying."""
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _AUTOLINK.sub(lambda m: m.group(1), text)
    text = _URL.sub(lambda m: m.group(1).removeprefix("www."), text)
    text = _HTML.sub(" ", text)
    for _ in range(2):  # nested emphasis (***both***)
        text = _EMPHASIS.sub(lambda m: m.group(2) or m.group(4), text)
    text = text.replace("`", "").replace("*", "")
    text = "".join(ch for ch in text if not _is_symbol(ch))
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))
    return text if any(ch.isalnum() for ch in text) else ""


def _is_symbol(ch: str) -> bool:
    # Emoji and pictographs (So) and their joiners/selectors; currency (Sc) stays.
    return (unicodedata.category(ch) == "So" and ch not in KEPT_SYMBOLS) or ch in "\u200d\ufe0f"


def language_name(tag: str) -> str:
    key = tag.strip().lower()
    if key in PLAIN_LANGUAGES:
        return ""
    return LANGUAGES.get(key, tag.strip())


class SentenceSplitter:
    """Cuts streamed Markdown into :class:`Sentence` units; see the module docstring."""

    def __init__(self, *, read_code: bool = False, first_fragment: bool = True):
        self.read_code = read_code
        self.first_fragment = first_fragment
        self.reset()

    def reset(self) -> None:
        self._pending = ""  # raw text not yet consumed
        self._line = ""  # the current text line (markers removed), not yet emitted
        self._at_line_start = True
        self._block = "text"  # "text", "code" or "table"
        self._fence = ""
        self._table_rows: list[str] = []
        self._emitted = 0

    def feed(self, chunk: str) -> list[Sentence]:
        """The units completed by ``chunk`` (often none)."""
        self._pending += chunk
        out: list[Sentence] = []
        while self._step(out, final=False):
            pass
        return out

    def flush(self) -> list[Sentence]:
        """The rest, at the end of the reply; the splitter is then ready for the next."""
        out: list[Sentence] = []
        while self._step(out, final=True):
            pass
        if self._block == "table":
            self._end_table(out)
        self._end_line(out)
        self.reset()
        return out

    # -- one step of the state machine; False when it needs more text ------------

    def _step(self, out: list[Sentence], *, final: bool) -> bool:
        if not self._pending:
            return False
        if self._block in ("code", "table") or self._at_line_start:
            newline = self._pending.find("\n")
            if newline < 0 and not final and not self._line_decidable():
                return False
            if self._block == "code":
                return self._code_line(out, newline, final=final)
            if self._block == "table":
                return self._table_line(out, newline, final=final)
            return self._line_start(out, newline)
        return self._text(out)

    def _line_decidable(self) -> bool:
        """Enough of a line's start to tell a fence, table, rule or list marker (with a
        task box) from text; a sentence is longer than this anyway."""
        head = self._pending.lstrip(" \t")
        if self._block == "table":
            return bool(head)
        return self._block == "text" and len(head) >= LINE_HEAD_CHARS

    def _take_line(self, newline: int) -> str:
        if newline < 0:
            line, self._pending = self._pending, ""
        else:
            line, self._pending = self._pending[:newline], self._pending[newline + 1 :]
        return line

    def _code_line(self, out: list[Sentence], newline: int, *, final: bool) -> bool:
        if newline < 0 and not final:
            return False
        line = self._take_line(newline)
        fence = _FENCE.match(line)
        if (
            fence
            and fence.group(1)[0] == self._fence[0]
            and len(fence.group(1)) >= len(self._fence)
        ):
            self._block = "text"
        elif self.read_code and (text := speakable(line)):
            out.append(Sentence(text, kind="code"))
        return True

    def _table_line(self, out: list[Sentence], newline: int, *, final: bool) -> bool:
        if not self._pending.lstrip(" \t").startswith("|"):
            self._end_table(out)
            return True
        if newline < 0 and not final:
            return False
        line = self._take_line(newline)
        if not _TABLE_SEPARATOR.match(line):
            self._table_rows.append(line)
        return True

    def _end_table(self, out: list[Sentence]) -> None:
        rows, self._table_rows, self._block = self._table_rows, [], "text"
        if self.read_code:
            for row in rows:
                cells = [speakable(c) for c in row.strip().strip("|").split("|")]
                if text := ", ".join(c for c in cells if c):
                    out.append(Sentence(text + ".", kind="table"))
            return
        body = max(0, len(rows) - 1)  # the first row is the header
        count = "one row" if body == 1 else f"{body} rows"
        out.append(Sentence(f"A table with {count}.", kind="table"))

    def _line_start(self, out: list[Sentence], newline: int) -> bool:
        head = self._pending[: newline if newline >= 0 else len(self._pending)]
        fence = _FENCE.match(head)
        if fence:
            if newline < 0:  # the language tag may still be streaming
                return False
            self._take_line(newline)
            self._block, self._fence = "code", fence.group(1)
            if not self.read_code:
                language = language_name(fence.group(2))
                text = f"Code block in {language}." if language else "Code block."
                out.append(Sentence(text, kind="code"))
            return True
        if head.lstrip(" \t").startswith("|"):
            self._block, self._table_rows = "table", []
            return True
        if newline >= 0 and (not head.strip() or _RULE.match(head)):
            self._take_line(newline)  # a blank line or a horizontal rule
            return True
        marker = _MARKER.match(head)
        if marker:
            self._pending = self._pending[marker.end() :]
        self._at_line_start = False
        return True

    def _text(self, out: list[Sentence]) -> bool:
        newline = self._pending.find("\n")
        if newline < 0:
            self._line += self._pending
            self._pending = ""
        else:
            self._line += self._pending[:newline]
            self._pending = self._pending[newline + 1 :]
        self._cut_sentences(out)
        if newline >= 0:
            self._end_line(out)
            self._at_line_start = True
        return bool(self._pending)

    def _end_line(self, out: list[Sentence]) -> None:
        line, self._line = self._line, ""
        self._emit(out, line, final=True)

    def _emit(self, out: list[Sentence], raw: str, *, final: bool) -> None:
        text = speakable(raw)
        if text:
            out.append(Sentence(text, final=final))
            self._emitted += 1

    def _cut_sentences(self, out: list[Sentence]) -> None:
        while True:
            end = self._sentence_end(self._line)
            cut = self._clause_cut(self._line if end is None else self._line[:end])
            if cut is None and end is None:
                return
            at = end if cut is None else cut
            piece, self._line = self._line[:at], self._line[at:]
            self._emit(out, piece, final=cut is None)

    def _sentence_end(self, line: str) -> int | None:
        """Index just past the first complete sentence in ``line``, or None."""
        i = 0
        while i < len(line):
            if line[i] not in TERMINATORS:
                i += 1
                continue
            j = i
            while j < len(line) and line[j] in TERMINATORS:
                j += 1
            while j < len(line) and line[j] in CLOSERS:
                j += 1
            if j == len(line):
                return None  # the next character decides (end of line ends it anyway)
            if not line[j].isspace():
                i = j  # "3.14", "node.js", "?!x"
                continue
            if line[i] == "." and j - i == 1 and not self._ends_after(line, i):
                i = j
                continue
            nxt = line[j:].lstrip()
            if not nxt:
                return None  # the next word decides
            if nxt[0].islower():  # 'She said "Stop!" and left', 'U.S. economy', 'etc. and'
                i = j
                continue
            return j
        return None

    def _ends_after(self, line: str, dot: int) -> bool:
        word = line[:dot].rsplit(None, 1)[-1] if line[:dot].strip() else ""
        word = word.lstrip("(\"'[*_")
        if word.lower() in NEVER_END:
            return False
        return not (len(word) == 1 and word.isalpha() and word.isupper())  # an initial

    def _clause_cut(self, text: str) -> int | None:
        """Where to cut ``text`` (a whole sentence, or the start of one) before its end:
        the first unit's first clause break, or a break in a sentence that runs long.
        The same whether the text arrived at once or a token at a time."""
        if self.first_fragment and self._emitted == 0:
            first = self._first_cut(text)
            if first is not None:
                return first
        if len(text) <= LONG_CHARS:
            return None
        breaks = [m.end() for m in _CLAUSE.finditer(text, 0, HARD_CHARS) if m.end() > 40]
        early = [b for b in breaks if b <= LONG_CHARS]
        if early or breaks:
            return early[-1] if early else breaks[0]
        if len(text) > HARD_CHARS:
            space = text.rfind(" ", 0, HARD_CHARS)
            return space + 1 if space > 0 else HARD_CHARS
        return None

    def _first_cut(self, text: str) -> int | None:
        """The earliest of: a clause break after 2+ words, the start of a joining word
        ("and", "that", "to"...) after 3+ words, the start of word 9. Each is decided
        by the text around it, so streaming cuts where the whole text would."""
        cuts = []
        for match in _CLAUSE.finditer(text):
            before = len(text[: match.start()].split())
            if FIRST_MIN_WORDS <= before <= FIRST_MAX_WORDS:
                cuts.append(match.end())
            if before >= FIRST_MIN_WORDS:
                break
        words = list(_WORD.finditer(text))
        for i, word in enumerate(words[: FIRST_MAX_WORDS + 1]):
            complete = word.end() < len(text) and text[word.end()].isspace()
            if i >= 3 and complete and word.group().lower() in JOINING_WORDS:
                cuts.append(word.start())
                break
        if len(words) > FIRST_MAX_WORDS:
            cuts.append(words[FIRST_MAX_WORDS].start())
        return min(cuts) if cuts else None
