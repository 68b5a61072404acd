"""Tiny T5 text encoders built offline, for the tiny SD3, PixArt and Flux pipelines.

The tokenizer is a Unigram model (T5's kind) trained with the `tokenizers` library on a few
hundred short prompts written here, wrapped as a `T5TokenizerFast` and saved with
`save_pretrained`; nothing is downloaded (design.md §6). The encoder is a random-weight
`T5EncoderModel` built from a `T5Config` whose vocabulary and special ids match the tokenizer.
Like `aigi.generators.tiny`, these are smoke-test stand-ins, not models.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
#: Real T5 tokenizers hold 100 sentinel tokens; a text encoder never sees them, so none here.
EXTRA_IDS = 0
VOCAB_SIZE = 300

_ADJECTIVES = (
    "red", "blue", "green", "small", "large", "old", "young", "bright", "dark", "quiet", "wooden",
    "golden", "tiny", "happy", "sleepy", "shiny", "rusty", "snowy", "sunny", "cloudy",
)
_SUBJECTS = (
    "cat", "dog", "house", "tree", "car", "bird", "boat", "flower", "mountain", "robot", "horse",
    "castle", "bridge", "apple", "chair", "lamp", "train", "bicycle", "fox", "owl", "lighthouse",
    "garden", "window", "river", "cake", "teapot", "guitar", "dragon", "kitten", "puppy",
)
_PLACES = (
    "in the snow", "on a beach", "at night", "in a forest", "on the street", "under the sea",
    "in a city", "near a lake", "on a table", "in the rain", "at sunset", "in a field",
)
_STYLES = (
    "a photo of", "a painting of", "a drawing of", "a picture of", "a close-up of", "an image of",
)
N_PROMPTS = 400


def training_prompts() -> list[str]:
    """A few hundred short, varied prompts (the tokenizer's training text), singular and plural,
    so that whole words recur inside other words and become pieces of the vocabulary."""
    rng = random.Random(0)  # integer-seeded choice() draws the same on every Python 3
    prompts = []
    for i in range(N_PROMPTS):
        adj, subject, place = rng.choice(_ADJECTIVES), rng.choice(_SUBJECTS), rng.choice(_PLACES)
        if i % 3 == 0:
            prompts.append(f"two {adj} {subject}s {place}")
        else:
            prompts.append(f"{rng.choice(_STYLES)} a {adj} {subject} {place}")
    return prompts


def build_t5_tokenizer(folder: str | Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train a Unigram tokenizer on `training_prompts()`, wrap it as `T5TokenizerFast` and save
    it to `folder`. Ids as in T5: <pad> = 0, </s> = 1, <unk> = 2; every sequence ends in </s>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.Unigram())
    raw.normalizer = normalizers.NFKC()
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        unk_token=UNK,
        # Every printable ASCII character, so unseen words split into characters, not <unk>.
        initial_alphabet=[chr(c) for c in range(33, 127)],
        show_progress=False,
    )
    raw.train_from_iterator(training_prompts(), trainer=trainer)
    vocab = [(piece, float(score)) for piece, score in json.loads(raw.to_str())["model"]["vocab"]]
    if [p for p, _ in vocab[:3]] != [PAD, EOS, UNK]:
        raise RuntimeError(f"unexpected special token order in the trained vocabulary: {vocab[:3]}")
    tok = T5TokenizerFast(vocab=vocab, extra_ids=EXTRA_IDS)
    tok.save_pretrained(folder)
    return folder


def tiny_t5_encoder(vocab_size: int, d_model: int = 32, num_layers: int = 2, seed: int = 0) -> Any:
    """A random-weight T5 v1.1-style encoder (gated GELU, as PixArt's and Flux's T5-XXL)."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=num_layers,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        is_encoder_decoder=False,
        use_cache=False,
    )
    return T5EncoderModel(config).eval()
