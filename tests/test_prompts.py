import pytest

from factory.config import PromptConfig
from factory.prompts import PromptError, PromptRenderer

PROBLEM = {"problem": "What is $2+3$?", "answer": "5", "uuid": "u1"}


def test_r1_math_prompt():
    msgs = PromptRenderer(PromptConfig()).messages(PROBLEM)
    assert msgs == [{"role": "user", "content": "What is $2+3$?\nPlease reason step by step, and put your final answer within \\boxed{}."}]


def test_system_prompt_and_custom_template(tmp_path):
    t = tmp_path / "t.jinja"
    t.write_text("Q: {{ problem }} ({{ source | default('unknown') }})")
    msgs = PromptRenderer(PromptConfig(template=str(t), system="Be brief.")).messages(PROBLEM)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1]["content"] == "Q: What is $2+3$? (unknown)"


def test_undefined_variable_names_template_and_row(tmp_path):
    t = tmp_path / "t.jinja"
    t.write_text("{{ problem }} {{ hint }}")
    with pytest.raises(PromptError, match="'hint' is undefined.*u1"):
        PromptRenderer(PromptConfig(template=str(t))).messages(PROBLEM)


def test_syntax_error_names_file(tmp_path):
    t = tmp_path / "t.jinja"
    t.write_text("{{ problem ")
    with pytest.raises(PromptError, match="t.jinja"):
        PromptRenderer(PromptConfig(template=str(t)))


def test_model_chat_template_wraps_the_prompt():
    """The engine applies the model's own chat template to our messages."""
    from transformers import AutoTokenizer

    from factory.models import ensure_model

    tok = AutoTokenizer.from_pretrained(ensure_model("smollm2-135m"))
    msgs = PromptRenderer(PromptConfig()).messages(PROBLEM)
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is $2+3$?\nPlease reason step by step" in text
    assert text.endswith("<|im_start|>assistant\n")
