import pytest

from factory.verify.extract import extract_answer, is_reasoning_complete, last_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5}.", "5"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
        ("\\boxed {7}", "7"),
        ("\\fbox{9} end", "9"),
        ("\\boxed{3} and later \\fbox{4}", "4"),
        ("set \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("unbalanced \\boxed{5", None),
        ("nothing here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_final_answer_phrase_when_no_box():
    assert extract_answer("Adding gives 5.\nThe final answer is 5.") == "5"
    assert extract_answer("Final answer: $x^2$\n") == "x^2"


def test_empty_box_is_no_answer():
    assert extract_answer("put your final answer within \\boxed{}") is None


def test_unfinished_generation_has_no_answer():
    assert extract_answer("\\boxed{5} but wait", finish_reason="length") is None
    assert extract_answer("<think>maybe \\boxed{5}", finish_reason="stop") is None
    assert extract_answer("<think>maybe \\boxed{5}</think> So \\boxed{6}", finish_reason="stop") == "6"


def test_answer_after_think_only():
    # a box inside the thinking that the final part does not repeat is not the answer
    assert extract_answer("<think>\\boxed{5}</think> I am not sure.") is None


def test_is_reasoning_complete():
    assert is_reasoning_complete("x", "stop")
    assert not is_reasoning_complete("x", "length")
    assert not is_reasoning_complete("<think> x", "stop")
    assert is_reasoning_complete("<think> x </think> y", "stop")
