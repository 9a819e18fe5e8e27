"""Tiny Qwen2-VL and LLaVA models with random weights, built offline.

The models exist to exercise the evaluation code end to end on a CPU, and
their outputs are meaningless. Each one is built from its configuration class
with very small dimensions. Its byte-level BPE tokenizer is trained in-process
on a short word list, and its processor carries an image processor and a chat
template. The folder is written with ``save_pretrained`` (safetensors), so it
loads back through ``AutoProcessor`` and ``AutoModelForImageTextToText`` like a
Hub checkpoint. Nothing is downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from builder.mat import check_choice

logger = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("qwen2_vl", "llava")

RANDOM_WEIGHTS_TAG = "crossmed-random-weights"
"""The model-card tag of a tiny model; runs of a model carrying it are reported as random-weight runs."""

# Random weights drawn with the usual 0.02 standard deviation give nearly equal
# logits for every token, so float rounding between batch sizes could flip an
# argmax. A wider spread keeps the tiny models' choices stable.
INITIALIZER_RANGE = 0.3

QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
LLAVA_SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "</s>", "<pad>", "<image>")

# Qwen2-VL's layout: the generation prompt ends with a newline, so the answer
# letter follows without a space.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-1.5's layout: the generation prompt ends with "ASSISTANT:", so the
# answer letter follows a space.
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_WORD_TEXT = """
which what where does the image show a an of in on at to from is are this that these those with
without and or not no yes finding findings option options answer letter correct choose select
best describes region box bounding tumor tumour mask lesion lung lungs brain chest thorax head
x-ray xray radiograph ct computed tomography mri magnetic resonance scan slice axial frontal
lateral view study patient subject left right upper lower middle lobe apex base pleural effusion
pneumothorax pneumonia atelectasis cardiomegaly edema consolidation opacity fracture device
support devices no-finding enlarged cardiomediastinum lesion nodule mass covid severity grade
glioma high low hgg lgg sequence flair t1 t1ce t2 contrast enhanced weighted modality anatomy
task classification segmentation detection normal abnormal mild moderate severe critical
percent involvement ground glass healthy disease visible present absent most likely given
following among listed shown displayed picture photo scan region area located location
coordinates normalized scale top bottom corner pixel width height number one two three four
reply respond only single with the letter please carefully look examine consider identify
"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())
"""The words the tiny tokenizers are trained on: question and option vocabulary of CrossMed."""


def build_tiny_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Build a tiny random-weight model of one family and save it to a folder.

    Args:
        family: ``"qwen2_vl"`` or ``"llava"``.
        out_dir: folder to write; created if missing. Existing files of the
            same names are overwritten.
        seed: seed for ``torch.manual_seed`` before the weights are drawn, so
            that the same seed gives the same weights.

    Returns:
        ``out_dir``, which ``AutoProcessor.from_pretrained`` and
        ``AutoModelForImageTextToText.from_pretrained`` accept.

    Raises:
        ValueError: when ``family`` is not one of :data:`FAMILIES`.
    """
    check_choice("model family", family, FAMILIES)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    model: PreTrainedModel
    processor: ProcessorMixin
    if family == "qwen2_vl":
        model, processor = _build_qwen2_vl()
    else:
        model, processor = _build_llava()

    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(_model_card(family, seed), encoding="utf-8")
    logger.info("Saved a tiny %s model (seed %d) to %s", family, seed, out_dir)
    return out_dir


def train_tokenizer(special_tokens: tuple[str, ...], vocab_size: int = 400) -> Tokenizer:
    """Train a byte-level BPE tokenizer on :data:`WORDS` and the option letters.

    The training text repeats the letters A-D with and without a leading space,
    so ``"A"`` and ``" A"`` are both single tokens, as in real chat models.

    Args:
        special_tokens: tokens kept whole and given the first ids, in order.
        vocab_size: the vocabulary size to train to, special tokens included.

    Returns:
        The trained ``tokenizers.Tokenizer``.
    """
    corpus = [" ".join(WORDS)] * 5
    corpus += ["A. B. C. D.", "A B C D", "Answer: A", "Answer: B", "Answer: C", "Answer: D"] * 20

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def _build_qwen2_vl() -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(QWEN_SPECIAL_TOKENS),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )
    model = Qwen2VLForConditionalGeneration(_qwen2_vl_config(tokenizer)).eval()

    # 56 x 56 to 112 x 112 pixels: 4 to 16 patches of 14 x 14 pixels, merged 2 x 2 into 1 to 4 image tokens.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    # The processor requires a video processor even though CrossMed has no videos.
    video_processor = Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return model, processor


def _qwen2_vl_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2VLConfig:
    def token_id(token: str) -> int:
        return _token_id(tokenizer, token)

    # head_dim = 64 / 4 = 16, and the multimodal rotary sections must add up to half of it.
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "initializer_range": INITIALIZER_RANGE,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }
    # The vision merger's output size (hidden_size) must equal the text hidden size.
    vision_config = {
        "depth": 1,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": INITIALIZER_RANGE,
    }
    return Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )


def _build_llava() -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(LLAVA_SPECIAL_TOKENS),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
    )
    model = LlavaForConditionalGeneration(_llava_config(tokenizer)).eval()

    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    # num_additional_image_tokens counts the CLS token, which the "default" strategy then drops again.
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def _llava_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    def token_id(token: str) -> int:
        return _token_id(tokenizer, token)

    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=INITIALIZER_RANGE,
        bos_token_id=token_id("<s>"),
        eos_token_id=token_id("</s>"),
        pad_token_id=token_id("<pad>"),
    )
    # A 28 x 28 image gives 2 x 2 patches of 14 pixels, so 4 image tokens once the CLS token is dropped.
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        initializer_range=INITIALIZER_RANGE,
    )
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=token_id("<image>"),
        image_seq_length=4,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ValueError(f"Token {token!r} is missing from the tiny tokenizer's vocabulary.")
    return token_id


def _model_card(family: str, seed: int) -> str:
    return (
        f"---\ntags:\n- {RANDOM_WEIGHTS_TAG}\n---\n\n"
        f"# Tiny {family} model with random weights\n\n"
        f"Built offline by `eval.tiny.build_tiny_model({family!r}, ..., seed={seed})` for tests and demos "
        "of the CrossMed evaluation code. Its weights are random, so its answers carry no meaning.\n"
    )
