"""The streaming sentence splitter: what gets said, and that streaming changes nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tars_assistant.speech.sentences import Sentence, SentenceSplitter, speakable


def split(text: str, *, step: int = 1, **options: bool) -> list[Sentence]:
    """Fed ``step`` characters at a time; whole sentences unless ``first_fragment``."""
    options.setdefault("first_fragment", False)
    splitter = SentenceSplitter(**options)
    out: list[Sentence] = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i : i + step])
    return out + splitter.flush()


def texts(text: str, **options: bool) -> list[str]:
    return [s.text for s in split(text, **options)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith met Mrs. Jones at St. Mary's. They talked.",
            ["Dr. Smith met Mrs. Jones at St. Mary's.", "They talked."],
        ),
        (
            "Use a tool, e.g. a hammer, i.e. something heavy. Then stop.",
            ["Use a tool, e.g. a hammer, i.e. something heavy.", "Then stop."],
        ),
        ("J. R. R. Tolkien wrote it. The end.", ["J. R. R. Tolkien wrote it.", "The end."]),
        # An acronym before a capital is read as a sentence end: the one ambiguity kept.
        (
            "He moved to the U.S. last year. The U.S. Army is big.",
            ["He moved to the U.S. last year.", "The U.S.", "Army is big."],
        ),
        (
            "Apples, pears etc. are fruit. Bread etc. Milk too.",
            ["Apples, pears etc. are fruit.", "Bread etc.", "Milk too."],
        ),
        (
            "The meeting is at 5 p.m. tomorrow. Be there.",
            ["The meeting is at 5 p.m. tomorrow.", "Be there."],
        ),
    ],
)
def test_abbreviations_do_not_end_sentences(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


def test_numbers_stay_whole() -> None:
    text = "Pi is 3.14159 and e is 2.718. It cost $1,250.50 in 2024. Version 2.0. Next."
    assert texts(text) == [
        "Pi is 3.14159 and e is 2.718.",
        "It cost $1,250.50 in 2024.",
        "Version 2.0.",
        "Next.",
    ]


def test_punctuation_and_quotes() -> None:
    text = 'She said "Stop!" and left. Really?! Yes... (It was late.) Fine.'
    assert texts(text) == [
        'She said "Stop!" and left.',
        "Really?!",
        "Yes...",
        "(It was late.)",
        "Fine.",
    ]


def test_lists_are_read_item_by_item_without_markers() -> None:
    text = (
        "Here are the steps:\n\n1. Install the package.\n2. Run `tars say hello`\n"
        "- **Bold** point\n* [ ] A task\n  - Nested item. With two sentences.\n"
    )
    assert texts(text) == [
        "Here are the steps:",
        "Install the package.",
        "Run tars say hello",
        "Bold point",
        "A task",
        "Nested item.",
        "With two sentences.",
    ]


def test_markdown_is_stripped() -> None:
    text = (
        "# The title\n> A quote with _emphasis_ and ***both***.\n"
        "See [the docs](https://example.com/docs) or https://www.python.org/downloads now.\n"
        "![a diagram](img.png) shows it 🎉. Keep snake_case and 25°C.\n---\nDone."
    )
    assert texts(text) == [
        "The title",
        "A quote with emphasis and both.",
        "See the docs or python.org now.",
        "a diagram shows it.",
        "Keep snake_case and 25°C.",
        "Done.",
    ]


def test_code_blocks_are_announced_not_read() -> None:
    text = (
        "Try this:\n```python\nprint('a. b. c.')\nx = 1\n```\nThat prints it.\n"
        "```\nplain\n```\n~~~bash\nls -la\n~~~\nAnd a ```tricky``` inline one.\n"
    )
    got = split(text)
    assert [s.text for s in got] == [
        "Try this:",
        "Code block in Python.",
        "That prints it.",
        "Code block.",
        "Code block in shell.",
        "And a tricky inline one.",
    ]
    assert [s.kind for s in got] == ["text", "code", "text", "code", "code", "text"]


def test_read_code_reads_code_lines_and_table_rows() -> None:
    text = "```python\nx = 1\n\nprint(x)\n```\n| a | b |\n|---|---|\n| 1 | 2 |\nEnd."
    assert texts(text, read_code=True) == ["x = 1", "print(x)", "a, b.", "1, 2.", "End."]


def test_tables_are_summarised_when_they_end() -> None:
    table = "| Name | Age |\n|:-----|----:|\n| Ann | 31 |\n| Bob | 42 |\n"
    assert texts("Look:\n" + table + "That is all.") == [
        "Look:",
        "A table with 2 rows.",
        "That is all.",
    ]
    assert texts("| x |\n|---|\n| 1 |") == ["A table with one row."]


def test_an_unclosed_code_block_is_dropped_at_the_end() -> None:
    assert texts("Sure.\n```js\nconsole.log('never said.')") == [
        "Sure.",
        "Code block in JavaScript.",
    ]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Well, the brown fox, as you know, jumps. Then, it sleeps.", "Well, the brown fox,"),
        ("One day, a robot named Paint was born.", "One day,"),
        ("The Moon is a celestial body that orbits Earth.", "The Moon is a celestial body"),
        ("I am happy to help.", "I am happy"),
        ("Sure. One, two, three.", "Sure."),
        ("Eight plain words, nothing joining, then go far.", "Eight plain words,"),
        (
            "Plain words with no break here go really far.",
            "Plain words with no break here go really",
        ),
        ("Short one here.", "Short one here."),
    ],
)
def test_the_first_unit_is_cut_short_then_sentences_are_whole(text: str, first: str) -> None:
    got = split(text, first_fragment=True)
    assert got[0].text == first and got[0].final == (first == text or first == "Sure.")
    assert " ".join(s.text for s in got).split() == text.split()
    rest = split(text[len(first) :].strip())
    assert [s.text for s in got[1:]] == [s.text for s in rest]  # whole sentences after it


def test_long_sentences_are_cut_at_clause_breaks() -> None:
    text = "This goes on " + "and on, " * 60 + "until it stops."
    got = split(text)
    assert len(got) > 2
    assert all(len(s.text) <= 320 for s in got)
    assert all(s.text.endswith(",") for s in got[:-1]) and got[-1].final
    words = " ".join(s.text for s in got).split()
    assert words == text.split()


def test_sentences_come_out_as_soon_as_they_are_complete() -> None:
    splitter = SentenceSplitter(first_fragment=False)
    assert splitter.feed("Hello there") == []
    assert splitter.feed(".") == []
    assert splitter.feed(" ") == []  # the next word decides: "e.g. a" is no end
    assert [s.text for s in splitter.feed("How")] == ["Hello there."]
    assert [s.text for s in splitter.feed(" are you?\n")] == ["How are you?"]
    assert splitter.flush() == []


def test_nothing_to_say() -> None:
    assert texts("") == []
    assert texts("```\ncode only\n```\n") == ["Code block."]
    assert texts("---\n\n***\n🎉🎉\n") == []
    assert speakable("**`…`**") == ""


MARKDOWNISH = st.lists(
    st.sampled_from(
        [
            *"abc XYZ.,!?:;-*_`#>|019\n()[]$~",
            "Dr.",
            "e.g.",
            "```py\n",
            "| a |\n",
            "1. ",
            "and ",
            "to ",
        ]
    ),
    max_size=80,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(MARKDOWNISH, st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40))
@pytest.mark.parametrize("first_fragment", [True, False])
def test_chunking_does_not_change_the_result(
    first_fragment: bool, text: str, cuts: list[int]
) -> None:
    whole = split(text, step=max(1, len(text)), first_fragment=first_fragment)
    splitter = SentenceSplitter(first_fragment=first_fragment)
    streamed: list[Sentence] = []
    i, k = 0, 0
    while i < len(text):
        step = cuts[k % len(cuts)]
        streamed += splitter.feed(text[i : i + step])
        i, k = i + step, k + 1
    streamed += splitter.flush()
    assert streamed == whole
    assert all(s.text and s.text == s.text.strip() for s in streamed)
