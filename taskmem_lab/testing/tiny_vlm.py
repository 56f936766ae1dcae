"""Tiny random-weight Idefics3 and SmolVLM vision-language models, built offline from configs.

Testing helper for the `hf` backend: no hub access, nothing downloaded. `build_tiny_idefics3(dir)`
trains a byte-level BPE tokenizer on a few sentences with `tokenizers`, makes a PIL image processor
that shrinks every image to one 32-pixel tile, builds `Idefics3ForConditionalGeneration` from a
config a few layers deep and 32 wide, and saves model, tokenizer, processor and chat template with
`save_pretrained`, so `AutoModelForImageTextToText`/`AutoProcessor.from_pretrained(dir)` load it
like any checkpoint. `build_tiny_smolvlm(dir)` does the same for SmolVLM, whose processor also
takes video (as SmolVLM2 does); transformers' video processors need torchvision, so without it the
video processor's config is written as plain JSON and loading the processor fails as it would for
the real SmolVLM2. The weights are random: what these models generate is gibberish.

Needs the `hf` extra (torch, transformers, tokenizers, num2words for SmolVLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Special tokens the Idefics3 processor and our chat template use; `<row_i_col_j>` only matter
# when image splitting is on, but the processor looks them up when it is built.
_SPECIAL = [
    "<pad>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
]

# Our own minimal template: `Role: text` turns, `<image>` where an image goes, generation prompt
# `Assistant:`. The processor expands each `<image>` into the image's token sequence.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>Assistant:{% endif %}"
)

_SENTENCES = [
    "A person walks into the kitchen and opens the fridge.",
    "Two people talk at a table; one of them holds a red cup.",
    "The camera pans across a test pattern with moving colour bars.",
    '{"description": "Someone puts the keys on the shelf near the door."}',
    "Describe only what happens in the new span of the video.",
    "Frame at 00:00:05.0 shows a clock, a counter and a gradient.",
]

IMAGE_SIDE = 32
PATCH = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIDE // PATCH) ** 2 // SCALE_FACTOR**2


def _tokenizer(vocab_size: int, corpus: Sequence[str] = ()):  # noqa: ANN202 - lazily imported
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_SENTENCES, *corpus] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<pad>",
        additional_special_tokens=_SPECIAL[3:],
    )


def _vision_config() -> dict:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIDE,
        "patch_size": PATCH,
    }


def _text_config(tokenizer) -> dict:  # noqa: ANN001 - transformers type, imported lazily
    return {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _save_model(model, tokenizer, path: Path) -> None:  # noqa: ANN001
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(path)


def build_tiny_smolvlm(path: str | Path, vocab_size: int = 400, seed: int = 0) -> Path:
    """Write a tiny random SmolVLM checkpoint whose processor takes images and video."""
    import json

    import torch
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil,
    )
    from transformers.utils import is_torchvision_available

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(vocab_size)
    edge = {"longest_edge": IMAGE_SIDE}
    sizes: dict[str, Any] = {"size": edge, "max_image_size": edge}
    image_processor = SmolVLMImageProcessorPil(do_resize=True, do_image_splitting=False, **sizes)
    if is_torchvision_available():
        from transformers import SmolVLMProcessor, SmolVLMVideoProcessor

        video_processor = SmolVLMVideoProcessor(do_resize=True, fps=1, num_frames=64, **sizes)
        processor = SmolVLMProcessor(
            image_processor,
            tokenizer,
            video_processor,
            image_seq_len=IMAGE_SEQ_LEN,
            chat_template=CHAT_TEMPLATE,
        )
        processor.save_pretrained(path)
    else:
        tokenizer.save_pretrained(path)
        image_processor.save_pretrained(path)
        video = {"video_processor_type": "SmolVLMVideoProcessor", "fps": 1, "num_frames": 64}
        (path / "video_preprocessor_config.json").write_text(json.dumps({**video, **sizes}))
        layout = {"processor_class": "SmolVLMProcessor", "image_seq_len": IMAGE_SEQ_LEN}
        (path / "processor_config.json").write_text(json.dumps(layout))
        (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    config = SmolVLMConfig(
        vision_config=_vision_config(),
        text_config=_text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=SCALE_FACTOR,
    )
    torch.manual_seed(seed)
    _save_model(SmolVLMForConditionalGeneration(config), tokenizer, path)
    return path


def build_tiny_idefics3(
    path: str | Path, vocab_size: int = 400, seed: int = 0, corpus: Sequence[str] = ()
) -> Path:
    """Write a tiny random Idefics3 checkpoint with its processor to `path` and return it.

    `corpus`: more text the tokenizer is trained on (prompts the model will see get shorter)."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(vocab_size, corpus)
    image_processor = Idefics3ImageProcessorPil(
        do_resize=True,
        size={"longest_edge": IMAGE_SIDE},
        max_image_size={"longest_edge": IMAGE_SIDE},
        do_image_splitting=False,
    )
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE
    )
    config = Idefics3Config(
        vision_config=_vision_config(),
        text_config=_text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=SCALE_FACTOR,
    )
    torch.manual_seed(seed)
    _save_model(Idefics3ForConditionalGeneration(config), tokenizer, path)
    processor.save_pretrained(path)
    return path


# Text settings of the in-memory tiny decoders below: 3 layers, hidden size 16.
_TINY_TEXT = {
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
_QWEN_VISION = {
    "depth": 1,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_heads": 2,
    "out_hidden_size": 16,
    "patch_size": 4,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}
TINY_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "idefics3", "smolvlm", "llama")


def tiny_decoder_model(family: str, seed: int = 0):  # noqa: ANN201 - transformers type
    """A random-weight model of `family` (one of `TINY_FAMILIES`), 3 text layers of width 16.

    Built in memory from a config in well under a second (no processor): for tests of what
    happens inside the decoder (steer hooks, checkpoint layouts), not of request formatting.
    """
    import torch
    import transformers as tf

    mrope = {"rope_type": "default", "mrope_section": [1, 1, 2]}
    qwen3_text = {**_TINY_TEXT, "head_dim": 8, "rope_scaling": {**mrope, "mrope_interleaved": True}}
    qwen3_vision = {**_QWEN_VISION, "num_position_embeddings": 16, "deepstack_visual_indexes": [0]}
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16}
    builders = {
        "qwen2_5_vl": lambda: tf.Qwen2_5_VLForConditionalGeneration(
            tf.Qwen2_5_VLConfig(
                text_config={**_TINY_TEXT, "rope_scaling": mrope},
                vision_config={**_QWEN_VISION, "window_size": 8, "fullatt_block_indexes": [0]},
            )
        ),
        "qwen3_vl": lambda: tf.Qwen3VLForConditionalGeneration(
            tf.Qwen3VLConfig(text_config=qwen3_text, vision_config=qwen3_vision)
        ),
        "qwen3_vl_moe": lambda: tf.Qwen3VLMoeForConditionalGeneration(
            tf.Qwen3VLMoeConfig(text_config={**qwen3_text, **moe}, vision_config=qwen3_vision)
        ),
        "idefics3": lambda: tf.Idefics3ForConditionalGeneration(
            tf.Idefics3Config(
                vision_config=_vision_config(),
                text_config={"model_type": "llama", **_TINY_TEXT},
                scale_factor=SCALE_FACTOR,
            )
        ),
        "smolvlm": lambda: tf.SmolVLMForConditionalGeneration(
            tf.SmolVLMConfig(
                vision_config=_vision_config(),
                text_config={"model_type": "llama", **_TINY_TEXT},
                scale_factor=SCALE_FACTOR,
            )
        ),
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_TINY_TEXT)),
    }
    if family not in builders:
        raise ValueError(f"unknown tiny family {family!r}; one of {', '.join(TINY_FAMILIES)}")
    torch.manual_seed(seed)
    return builders[family]().eval()
