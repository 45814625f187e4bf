"""The first-letter spelling task of feature absorption (Chanin et al. 2024, as SAEBench runs it): single-token
vocabulary words, each read in an in-context-learning prompt, and the hook point's activations at the word.

A prompt is `n_icl` solved examples, then the word, all in the template `TEMPLATE` and separated by newlines
(a newline also opens the prompt, as SAEBench does):

    \\n<ex1> has the first letter: E\\n<ex2> has the first letter: A\\n ... \\n<word> has the first letter:

The examples are other words of the same split (training words for training words, held-out words for held-out
words), drawn per word by the seed. The prompt is assembled from token ids (the word is one token, each answer
" X" one token), so every prompt has the same length and the word's position is the same in all of them; the
activation is read there (SAEBench's position -6 for this template on Gemma's tokenizer).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..errors import EvalError
from .activations import id_batch

TEMPLATE = "{word} has the first letter:"
"""The prompt template of SAEBench's absorption evaluation; the answer " X" (upper case) follows it."""

N_ICL = 10
"""Solved examples before the word (SAEBench's max_icl_examples)."""

WORD = re.compile(r"^ [A-Za-z]{2,}$")
"""A vocabulary token that counts as a word: a leading space and 2+ ASCII letters."""


def vocab_words(tokenizer, limit: int = 3000, seed: int = 0) -> list[tuple[int, str]]:
    """(token id, word) of single-token words (`WORD`), at most `limit`, sampled by `seed`."""
    out = []
    for i, t in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        w = t.replace("\u2581", " ").replace("\u0120", " ") if isinstance(t, str) else ""
        if WORD.match(w):
            out.append((i, w))
    random.Random(seed).shuffle(out)
    return out[:limit]


@dataclass
class SpellingSet:
    """Words with their first letters and the hook point's activations at the word in its prompt; `train` and
    `test` split the words (SAEBench: 80/20). One set serves every SAE at that hook point."""

    words: list[str]
    letters: list[str]
    """First letter of each word, lower case."""
    acts_ND: Tensor
    """[N, D] activations at each word's token, float32."""
    train: list[int]
    test: list[int]
    hookpoint: str
    n_icl: int


def icl_rows(tokenizer, word_ids: Sequence[int], examples: Sequence[Sequence[int]]) -> tuple[list[list[int]], int]:
    """Token-id rows of the prompts (module docstring): word `word_ids[i]` after the solved examples
    `examples[i]` (token ids of words); and the word's position in every row."""
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    head, tail = TEMPLATE.split("{word}")
    if head:
        raise EvalError(f"TEMPLATE must start with the word, got {TEMPLATE!r}")
    suffix, newline = enc(tail), enc("\n")
    rows = []
    for wid, exs in zip(word_ids, examples):
        row = list(newline)
        for e in exs:
            letter = tokenizer.decode([e]).strip()[0].upper()
            row += [e, *suffix, *enc(" " + letter), *newline]
        rows.append(row + [wid, *suffix])
    if len({len(r) for r in rows}) > 1:
        raise EvalError("the spelling prompts differ in length (an answer ' X' is not one token in this tokenizer); "
                        "absorption needs a tokenizer with single-token capital letters")
    return rows, len(rows[0]) - len(suffix) - 1


@torch.no_grad()
def spelling_set(model, hookpoint: str, *, n_words: int = 3000, n_icl: int = N_ICL, test_frac: float = 0.2,
                 min_words: int = 40, seed: int = 0, batch_size: int = 32) -> SpellingSet:
    """Read `n_words` vocabulary words (`vocab_words`) in their prompts at `hookpoint` (one forward pass
    over all of them, stopped at the hook point)."""
    from ..stream import stream_activations

    words = vocab_words(model.tokenizer, n_words, seed)
    if len(words) < min_words:
        raise EvalError(f"the vocabulary gave {len(words)} single-token words; absorption needs at least "
                        f"{min_words} (a tokenizer with whole-word tokens)")
    if not 0 < test_frac < 1:
        raise EvalError(f"test_frac must be in (0, 1), got {test_frac}")
    rng = random.Random(seed)
    idx = list(range(len(words)))
    rng.shuffle(idx)
    n_test = max(1, int(test_frac * len(idx)))
    test, train = sorted(idx[:n_test]), sorted(idx[n_test:])
    train_set = set(train)
    examples = []
    for i in range(len(words)):
        same = train if i in train_set else test
        picks = []
        while len(picks) < min(n_icl, len(same) - 1):
            j = same[rng.randrange(len(same))]
            if j != i and j not in picks:
                picks.append(j)
        examples.append([words[j][0] for j in picks])
    rows, pos = icl_rows(model.tokenizer, [w for w, _ in words], examples)
    ids, mask = id_batch(model, rows)  # every row has the same length: no padding
    acts = []
    for batch in stream_activations(model, (ids, mask), [hookpoint], batch_size=batch_size):
        x_nD = batch.acts[hookpoint]
        acts.append(x_nD.reshape(len(batch.input_ids), -1, x_nD.shape[-1])[:, pos].float())
    letters = [w.strip()[0].lower() for _, w in words]
    return SpellingSet([w for _, w in words], letters, torch.cat(acts), train, test, hookpoint, n_icl)
