"""Tiny random transformers for fast tests: built from configs in the test, no download."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per byte) with pad/bos/eos/unk = 0/1/2/3; 260 tokens."""
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), pre_tokenizers.Split("", "isolated")]
    )
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


VOCAB = 260
ARCHS = ["gpt2", "llama", "gemma2", "gemma3", "qwen2", "gpt_neox"]


def tiny_hf_model(arch: str = "llama", n_layers: int = 3, d: int = 32, seed: int = 0):
    import transformers as tf

    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gpt2":
        cfg = tf.GPT2Config(n_layer=n_layers, n_embd=d, n_head=4, n_positions=256, **common)
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(
            num_hidden_layers=n_layers, hidden_size=d, num_attention_heads=4, intermediate_size=4 * d,
            max_position_embeddings=256, use_parallel_residual=True, **common,
        )
    else:
        kw = dict(
            num_hidden_layers=n_layers, hidden_size=d, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=2 * d, max_position_embeddings=256, **common,
        )
        cls = {
            "llama": tf.LlamaConfig,
            "qwen2": tf.Qwen2Config,
            "gemma2": tf.Gemma2Config,
            "gemma3": tf.Gemma3TextConfig,
        }[arch]
        if arch.startswith("gemma"):
            kw["head_dim"] = d // 4
        cfg = cls(**kw)
    torch.manual_seed(seed)
    auto = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return auto.eval()


def tiny_model(arch: str = "llama", **kw):
    import saekit

    return saekit.load_model(tiny_hf_model(arch, **kw), tokenizer=byte_tokenizer())
