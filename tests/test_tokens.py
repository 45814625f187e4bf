"""The one keep rule: the context separator (BOS, else EOS) and padding are left out, for every consumer."""

from __future__ import annotations

import pytest
import torch
from tiny import byte_tokenizer, tiny_hf_model

import saekit
from saekit.errors import CorpusError, SaekitError
from saekit.tokens import keep_mask, separator_id


def no_bos_tokenizer():
    """Qwen-style: an EOS token and padding, no BOS."""
    tok = byte_tokenizer()
    tok.bos_token = None
    return tok


def test_separator_is_bos_else_eos_else_a_clear_error():
    assert separator_id(byte_tokenizer()) == 1
    assert separator_id(no_bos_tokenizer()) == 2
    tok = no_bos_tokenizer()
    tok.eos_token = None
    with pytest.raises(CorpusError, match="neither a BOS nor an EOS") as err:
        separator_id(tok)
    assert isinstance(err.value, SaekitError)


@pytest.mark.parametrize("make_tok, sep", [(byte_tokenizer, 1), (no_bos_tokenizer, 2)])
def test_contexts_prompts_and_keep_agree_with_and_without_bos(make_tok, sep):
    model = saekit.load_model(tiny_hf_model("qwen2"), tokenizer=make_tok())
    assert model.separator_id == sep
    ctx = saekit.contexts(model, ["some text here and there", "more words to read, a short one"], context_len=8, min_tokens=2)
    assert (ctx.input_ids[:, 0] == sep).all()  # every context starts with the separator
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    assert not keep[:, 0].any()  # ... which is never kept
    assert torch.equal(keep, ctx.attention_mask.bool() & (ctx.input_ids != sep))
    ids = model.encode_prompt("hi")
    assert ids[0, 0] == sep and ids.shape[1] == 3
    assert model._keep(ids, None).tolist() == [[False, True, True]]  # edits skip the separator too
    cache = saekit.harvest(model, ctx, hookpoints="resid_post.0", progress=False)
    assert not (cache.load("token_ids") == sep).any()
    assert len(cache) == int(keep.sum())


def test_keep_mask_drops_padding_and_separators_anywhere():
    ids = torch.tensor([[1, 5, 6, 1, 7, 0], [1, 8, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    assert keep_mask(ids, mask, 1).tolist() == [
        [False, True, True, False, True, False],
        [False, True, False, False, False, False],
    ]
    assert keep_mask(ids, mask, 1, drop_separator=False)[:, 0].all()
    assert keep_mask(ids, mask, 1, drop_pad=False)[0, 5]
