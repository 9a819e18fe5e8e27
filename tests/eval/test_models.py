"""Tests of eval.models and eval.tiny: loading checks, dtype, tokenizer set-up, tiny model builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from eval.models import load_model, prepare_tokenizer, resolve_dtype
from eval.tiny import RANDOM_WEIGHTS_TAG, build_tiny_model

pytest_plugins = ["tests.eval.tiny_models"]


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_load_model_tiny_families(tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), dtype="float32", device="cpu")

    assert loaded.name == str(tiny_model_dir)
    assert loaded.model.dtype == torch.float32
    assert not loaded.model.training
    assert loaded.input_device == torch.device("cpu")
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token is not None
    assert loaded.processor.chat_template


def test_resolve_dtype_explicit() -> None:
    assert resolve_dtype("float32") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype("float16") == torch.float16


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means bfloat16 where CUDA is available")
def test_resolve_dtype_auto_cpu() -> None:
    assert resolve_dtype("auto") == torch.float32


def test_resolve_dtype_invalid() -> None:
    with pytest.raises(ValueError, match="Invalid dtype 'fp8'"):
        resolve_dtype("fp8")


def test_load_model_rejects_remote_code(qwen2_vl_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(qwen2_vl_dir, tmp_path / "remote")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["model_type"] = "crossmed_custom_vlm"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    config_path.write_text(json.dumps(config))

    with pytest.raises(ValueError, match="--trust-remote-code"):
        load_model(str(folder), dtype="float32")


def test_load_model_rejects_text_only_model(tmp_path: Path) -> None:
    tokenizer_model = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    tokenizer_model.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer_model, unk_token="<unk>")
    config = LlamaConfig(vocab_size=2, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    with pytest.raises(ValueError, match="not an image-text-to-text model.*'llama'"):
        load_model(str(tmp_path), dtype="float32")


def test_load_model_unknown_relative_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A name such as "runs/no-such-model" could be a Hub id. Offline and with no such folder, transformers raises OSError.
    monkeypatch.chdir(tmp_path)

    with pytest.raises(FileNotFoundError, match=r"^Model runs/no-such-model is not a folder here, and loading it as a Hub"):
        load_model("runs/no-such-model")


def test_load_model_rejects_missing_chat_template(qwen2_vl_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(qwen2_vl_dir, tmp_path / "no_template")
    (folder / "chat_template.jinja").unlink()

    with pytest.raises(ValueError, match="has no chat template"):
        load_model(str(folder), dtype="float32")


def test_load_model_rejects_pickle_weights(llava_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(llava_dir, tmp_path / "pickle")
    state_dict = load_file(folder / "model.safetensors")
    torch.save(state_dict, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    with pytest.raises(OSError, match="--allow-pickle-weights"):
        load_model(str(folder), dtype="float32")


def test_load_model_allows_pickle_weights(llava_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(llava_dir, tmp_path / "pickle")
    state_dict = load_file(folder / "model.safetensors")
    torch.save(state_dict, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    loaded = load_model(str(folder), dtype="float32", allow_pickle_weights=True)

    reference = load_model(str(llava_dir), dtype="float32")
    for (name, weight), (_, expected) in zip(
        loaded.model.state_dict().items(), reference.model.state_dict().items(), strict=True
    ):
        assert torch.equal(weight, expected), name


def test_prepare_tokenizer_uses_eos_as_pad() -> None:
    tokenizer_model = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "A": 2}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer_model, unk_token="<unk>", eos_token="</s>")
    assert tokenizer.pad_token is None

    prepare_tokenizer(tokenizer)

    assert tokenizer.pad_token == "</s>"
    assert tokenizer.padding_side == "left"


def test_prepare_tokenizer_without_pad_or_eos() -> None:
    tokenizer_model = Tokenizer(models.WordLevel({"<unk>": 0, "A": 1}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer_model, unk_token="<unk>")

    with pytest.raises(ValueError, match="no pad token and no end-of-sequence token"):
        prepare_tokenizer(tokenizer)


def test_build_tiny_model_reproducible(tmp_path: Path) -> None:
    first = load_file(build_tiny_model("llava", tmp_path / "first", seed=3) / "model.safetensors")
    second = load_file(build_tiny_model("llava", tmp_path / "second", seed=3) / "model.safetensors")
    other = load_file(build_tiny_model("llava", tmp_path / "other", seed=4) / "model.safetensors")

    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_build_tiny_model_writes_card(qwen2_vl_dir: Path) -> None:
    card = (qwen2_vl_dir / "README.md").read_text()

    assert RANDOM_WEIGHTS_TAG in card
    assert (qwen2_vl_dir / "model.safetensors").is_file()
    assert not (qwen2_vl_dir / "pytorch_model.bin").exists()


def test_build_tiny_model_invalid_family(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Invalid model family 'gpt2'"):
        build_tiny_model("gpt2", tmp_path)


def test_tiny_tokenizers_have_both_letter_forms(tiny_model_dir: Path) -> None:
    tokenizer = load_model(str(tiny_model_dir), dtype="float32").tokenizer

    for letter in "ABCD":
        assert len(tokenizer(letter, add_special_tokens=False)["input_ids"]) == 1
        assert len(tokenizer(" " + letter, add_special_tokens=False)["input_ids"]) == 1
