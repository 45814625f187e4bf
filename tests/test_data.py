"""The built-in offline corpus, splits, mixing, users' text and tokenisation into contexts."""

import itertools

import pytest
import torch

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
    with pytest.raises(CorpusError, match="no contexts"):
        data.contexts(byte_tokenizer(), data.text_documents(texts) if texts else [], context_len=16)


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
