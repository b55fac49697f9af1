import time

import pytest

from factory.verify.pool import RuleVerifier


@pytest.fixture(scope="module")
def verifier():
    v = RuleVerifier(workers=2, timeout_s=2, memory_mb=1024)
    yield v
    v.close()


@pytest.mark.parametrize(
    "gold, answer, expected",
    [("6", "6", True), ("6", "7", False), ("\\frac{3}{4}", "0.75", True), ("2\\sqrt{3}", "\\sqrt{12}", True),
     ("(2, -1)", "(2,-1)", True), ("25\\pi", "25\\pi", True), ("25\\pi", "\\pi r^2 = 25", False)],
)
def test_verdicts(verifier, gold, answer, expected):
    v = verifier.verify(gold, answer)
    assert v.status == "ok" and v.correct is expected


def test_no_answer(verifier):
    v = verifier.verify("6", None)
    assert v.status == "no_answer" and v.correct is False


def test_hung_comparison_is_killed_and_pool_keeps_working(verifier):
    started = time.monotonic()
    v = verifier.verify("5", "10^{10^{10}}")
    assert v.status in ("timeout", "error"), v
    assert v.correct is False
    assert time.monotonic() - started < verifier.timeout_s + 2
    assert verifier.verify("6", "6").correct is True


def test_async_verification(verifier):
    import asyncio

    async def go():
        return await asyncio.gather(*(verifier.averify("42", a) for a in ["42", "41", None]))

    assert [v.correct for v in asyncio.run(go())] == [True, False, False]
