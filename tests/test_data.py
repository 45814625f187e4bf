"""The built-in offline corpus, splits, mixing, users' text and tokenisation into contexts."""

import itertools

import pytest
import torch

import saekit
from saekit import data
from saekit.data import CorpusError
from tiny import byte_tokenizer


@pytest.mark.parametrize("source", data.SOURCES)
def test_each_builtin_source_has_documents_in_both_splits(source):
    train = data.source_documents(source, "train")
    test = data.source_documents(source, "test")
    assert len(train) > 10 * len(test) > 0
    assert not {d.key for d in train} & {d.key for d in test}
    assert all(d.text.strip() for d in train[:100])


def test_python_source_excludes_tests():
    keys = [d.key for d in data.source_documents("python", "all")]
    assert keys and not any("/test/" in f"/{k}" or k.split("/")[-1].startswith("test_") for k in keys)


def test_default_mix_interleaves_prose_languages_and_code():
    docs = list(itertools.islice(data.corpus(), 400))
    chars = {s: sum(len(d.text) for d in docs if d.source == s) for s in data.SOURCES}
    total = sum(chars.values())
    for s, w in data.DEFAULT_MIX.items():
        assert abs(chars[s] / total - w) < 0.1, (s, chars[s] / total, w)


def test_corpus_is_deterministic_and_seeded():
    a = [d.key for d in itertools.islice(data.corpus(seed=1), 50)]
    b = [d.key for d in itertools.islice(data.corpus(seed=1), 50)]
    c = [d.key for d in itertools.islice(data.corpus(seed=2), 50)]
    assert a == b and a != c


def test_contexts_start_with_bos_and_pad_on_the_right():
    tok = byte_tokenizer()
    ctx = data.contexts(tok, ["a" * 10, "b" * 300], context_len=64)
    assert (ctx.input_ids[:, 0] == tok.bos_token_id).all()
    lengths = ctx.attention_mask.sum(1)
    assert lengths.tolist() == [11, 64, 64, 64, 64, 1 + 300 - 4 * 63]
    for row, n in zip(ctx.input_ids, lengths):
        assert (row[n:] == tok.pad_token_id).all()
    assert ctx.doc_index.tolist() == [0, 1, 1, 1, 1, 1]


def test_contexts_stop_at_the_token_budget():
    tok = byte_tokenizer()
    ctx = data.contexts(tok, ["x" * 1000] * 10, context_len=33, n_tokens=100)
    text_tokens = int(ctx.attention_mask.sum()) - len(ctx)
    assert 100 <= text_tokens < 100 + 32


def test_users_text_files_and_strings(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello from a file " * 5)
    docs = data.text_documents([p, "and a string long enough to count"])
    assert [d.source for d in docs] == ["user", "user"] and docs[0].key == str(p)


@pytest.mark.parametrize("texts", [[], ["", "   "], ["hi"]])
def test_empty_corpus_is_a_clear_error(texts):
    docs = data.text_documents(texts) if texts else []
    if texts == ["hi"]:  # a user's short text is kept by default; only an explicit min_tokens drops it
        assert data.contexts(byte_tokenizer(), docs, context_len=16).input_ids.shape == (1, 3)
        with pytest.raises(CorpusError, match=r"shorter than min_tokens \(8\)"):
            data.contexts(byte_tokenizer(), docs, context_len=16, min_tokens=8)
        return
    with pytest.raises(CorpusError, match="no contexts"):
        data.contexts(byte_tokenizer(), docs, context_len=16)


@pytest.mark.parametrize(
    "texts, message",
    [
        ([], "no texts were given"),
        (iter([]), "no texts were given"),
        ([""], "empty or only whitespace"),
        (["   ", "\n\t "], "all 2 text\\(s\\) are empty or only whitespace"),
        ("  ", "empty or only whitespace"),
        ([data.Document(" \n", "user", "0")], "empty or only whitespace"),
    ],
)
def test_no_text_or_only_whitespace_is_a_corpus_error(texts, message):
    """An empty list, or texts that are only whitespace, raise saekit's CorpusError naming the problem and
    the fix (never a context of whitespace tokens, never a bare IndexError)."""
    with pytest.raises(CorpusError, match=message) as e:
        data.contexts(byte_tokenizer(), texts, context_len=16)
    assert isinstance(e.value, saekit.SaekitError) and "pass" in str(e.value)


def test_a_users_short_text_is_kept_and_not_padded():
    """One short sentence gives [1, n + 1] (BOS + its n tokens), with no padding column."""
    tok = byte_tokenizer()
    text = "The Eiffel Tower is in Paris."
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    ctx = data.contexts(tok, [text])
    assert ctx.input_ids.shape == (1, n + 1) and bool(ctx.attention_mask.all())
    assert ctx.input_ids[0, 0] == tok.bos_token_id
    # several short texts: padded to the longest of them, not to context_len; blank ones skipped
    ctx = data.contexts(tok, ["short", "   ", "a little longer"], context_len=64)
    assert ctx.input_ids.shape == (2, 1 + len("a little longer")) and ctx.attention_mask.sum(1).tolist() == [6, 16]
    assert [d.text for d in ctx.documents] == ["short", "a little longer"]
    # a long text's short last piece is kept for users' text (min_tokens 1), dropped at min_tokens=8
    assert data.contexts(tok, ["x" * 65], context_len=32).attention_mask.sum(1).tolist() == [32, 32, 4]
    assert data.contexts(tok, ["x" * 65], context_len=32, min_tokens=8).attention_mask.sum(1).tolist() == [32, 32]
    with pytest.raises(CorpusError, match="min_tokens must be at least 1"):
        data.contexts(tok, ["x"], min_tokens=0)
    with pytest.raises(CorpusError, match="n_tokens must be at least 1"):
        data.contexts(tok, ["x"], n_tokens=0)


def test_builtin_corpus_keeps_context_len_and_min_tokens_8():
    """The built-in corpus keeps its width context_len and its default min_tokens of 8, passed or not."""
    tok = byte_tokenizer()
    docs = list(itertools.islice(data.corpus(), 3))
    short = data.Document(docs[0].text[:5], docs[0].source, docs[0].key)  # a built-in document under 8 tokens
    ctx = data.contexts(tok, [short, *docs], context_len=4096, n_contexts=2)
    assert ctx.input_ids.shape[1] == 4096 and ctx.documents[0] is not short
    with pytest.raises(CorpusError, match=r"shorter than min_tokens \(8 for the built-in corpus"):
        data.contexts(tok, [short], context_len=32)


def test_unknown_source_and_empty_mix():
    with pytest.raises(CorpusError, match="built-in sources"):
        next(data.corpus({"wiki_de": 1.0}))
    with pytest.raises(CorpusError, match="positive weight"):
        next(data.corpus({"wiki_en": 0.0}))


def test_token_ids_fit_the_tokenizer():
    tok = byte_tokenizer()
    ctx = data.contexts(tok, itertools.islice(data.corpus(), 20), context_len=32, n_tokens=2000)
    assert int(ctx.input_ids.max()) < len(tok) and ctx.input_ids.dtype == torch.long


def test_hf_datasets_streaming_code_path(monkeypatch):
    """The real `datasets.load_dataset(..., streaming=True)` call, with a stand-in module (no hub here)."""
    import sys
    import types

    calls = {}

    def load_dataset(path, name=None, split=None, streaming=False):
        calls.update(path=path, name=name, split=split, streaming=streaming)
        return iter([{"text": "first row"}, {"text": "second row"}, {"text": "third"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    docs = list(data.hf_documents("some/dataset", "en", limit=2))
    assert calls == {"path": "some/dataset", "name": "en", "split": "train", "streaming": True}
    assert [d.text for d in docs] == ["first row", "second row"] and docs[0].source == "hf:some/dataset"
    with pytest.raises(CorpusError, match="no field 'body'"):
        list(data.hf_documents("some/dataset", text_field="body"))


def test_strings_are_text_and_paths_are_files(tmp_path):
    """A str is never probed as a file name: a 300-byte line stays text, a str naming a file stays text."""
    p = tmp_path / "notes.txt"
    p.write_text("the file's own words")
    long_line = "word " * 100  # 500 bytes on one line: probing it as a path would raise 'File name too long'
    docs = data.text_documents([long_line, str(p), p])
    assert [d.text for d in docs] == [long_line, str(p), "the file's own words"]
    with pytest.raises(data.CorpusError, match="not a readable file"):
        data.text_documents([tmp_path / "missing.txt"])
