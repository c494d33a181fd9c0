"""Word-level tokenizers built offline (no hub download) for the tiny and bundled text encoders."""

from __future__ import annotations

from typing import Sequence


def word_level_tokenizer(vocabulary: Sequence[str], model_max_length: int = 512, split_punctuation: bool = True):
    """A lower-casing ``PreTrainedTokenizerFast`` over ``vocabulary`` that appends ``</s>`` like T5's.

    ``vocabulary`` must hold ``<pad>``, ``</s>`` and ``<unk>``; unknown words map to ``<unk>``. Words are split on
    whitespace, and also on punctuation when ``split_punctuation``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(vocabulary)}
    missing = {"<pad>", "</s>", "<unk>"} - set(vocab)
    if missing:
        raise ValueError(f"the vocabulary lacks the special tokens {sorted(missing)}")
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace() if split_punctuation else pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length
    )
