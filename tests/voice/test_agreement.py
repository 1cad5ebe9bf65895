"""LocalAgreement and the text helpers (pure functions, no audio)."""

from __future__ import annotations

from tars_assistant.voice.agreement import LocalAgreement, cut_loop, normalise
from tars_assistant.voice.synth import word_error_rate, word_errors


def test_words_two_hypotheses_agree_on_are_committed() -> None:
    la = LocalAgreement()
    assert la.update("Please") == ("", "Please")
    assert la.update("Please remind") == ("Please", "remind")
    assert la.update("Please remind me to call.") == ("Please remind", "me to call.")
    # disagreement after the committed words: nothing new is committed
    assert la.update("Please remind me the event") == ("Please remind me", "the event")
    assert la.update("Please remind me to call the dentist") == (
        "Please remind me",
        "to call the dentist",
    )


def test_committed_words_never_change() -> None:
    la = LocalAgreement()
    seen: list[str] = []
    for hyp in [
        "What is",
        "What is the weather",
        "What is that weather going",
        "What is the weather going to be like",
        "Watt is the weather going to be like in London",
        "What is the weather going to be like in London this weekend?",
    ]:
        committed, _ = la.update(hyp)
        if seen:
            assert committed.split()[: len(seen[-1].split())] == seen[-1].split()
        seen.append(committed)
    assert seen[-1].startswith("What is")


def test_agreement_ignores_case_and_punctuation() -> None:
    la = LocalAgreement()
    la.update("in London, this")
    assert la.update("In london this weekend")[0] == "In london this"


def test_cut_loop_keeps_one_copy_of_a_repeated_phrase() -> None:
    words = [
        "Open",
        "the",
        "project.",
        "Open",
        "the",
        "project.",
        "Open",
        "the",
        "project.",
        "Open",
        "the",
    ]
    assert cut_loop(words) == ["Open", "the", "project."]
    assert cut_loop(["10,", "10,", "10,", "20", "minutes"]) == ["10,"]
    assert cut_loop(["a", "very", "very", "good", "day"]) == ["a", "very", "very", "good", "day"]


def test_normalise_and_word_error_rate() -> None:
    assert normalise("Don't STOP,  now!") == "don't stop now"
    assert word_errors("The cat sat on the mat.", "the cat sat on mat") == (1, 6)
    assert word_errors("a b c", "") == (3, 3)
    assert word_error_rate([("a b", "a b"), ("c d", "c x")]) == 0.25
