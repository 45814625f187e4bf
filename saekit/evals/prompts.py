"""The chat messages sent to an explainer or scorer LLM, and the parsing of its replies.

Highlighting follows delphi and Bills et al.: active tokens are wrapped in << >>, and for explaining
each highlighted token carries its activation (0-10 relative to the feature's maximum).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from ..errors import FeatureError

Messages = list[dict[str, str]]

EXPLAIN_SYSTEM = (
    "You are studying one feature of a language model. You see text excerpts in which the tokens where the "
    "feature fires are marked <<like this>>, with the activation strength (0-10) after each marked token, "
    "and the tokens the feature makes the model predict. Reply with one short phrase (at most 15 words) "
    "saying what the feature responds to. Reply with the phrase only."
)
DETECT_SYSTEM = (
    "You check explanations of a language-model feature. Given the explanation and a text excerpt, answer 1 "
    "if the feature is likely to fire somewhere in the excerpt, else 0. Reply with the digit only."
)
FUZZ_SYSTEM = (
    "You check explanations of a language-model feature. Given the explanation and a text excerpt with some "
    "tokens marked <<like this>>, answer 1 if the marked tokens are the ones the feature fires on, else 0. "
    "Reply with the digit only."
)


class MalformedReply(FeatureError):
    """A reply that is not the answer asked for (counted per feature, never guessed)."""


def highlight(tokens: Sequence[str], marked: Sequence[int] | set[int], values: Sequence[float] | None = None) -> str:
    """The excerpt as text with the `marked` positions wrapped in << >> (and their value when given)."""
    marked = set(marked)
    out = []
    for j, t in enumerate(tokens):
        if j in marked:
            out.append(f"<<{t}>>" + (f"({values[j]:g})" if values is not None else ""))
        else:
            out.append(t)
    return "".join(out).replace("\n", "\\n")


def explain_messages(contexts: Sequence[dict[str, Any]], logit_tokens: Sequence[str] = ()) -> Messages:
    """Messages asking for an explanation of a feature from its activating `contexts` (FeatureStats
    examples) and the tokens it promotes."""
    vmax = max((a for c in contexts for a in c["acts"]), default=0.0) or 1.0
    lines = []
    for i, c in enumerate(contexts, 1):
        active = [j for j, a in enumerate(c["acts"]) if a > 0]
        scaled = [round(10 * a / vmax) for a in c["acts"]]
        lines.append(f"Excerpt {i}: {highlight(c['tokens'], active, scaled)}")
    if logit_tokens:
        lines.append("Tokens the feature promotes: " + ", ".join(repr(t) for t in logit_tokens))
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def detect_messages(explanation: str, context: dict[str, Any]) -> Messages:
    text = "".join(context["tokens"]).replace("\n", "\\n")
    return [{"role": "system", "content": DETECT_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\nExcerpt: {text}\nAnswer (1 or 0):"}]


def fuzz_messages(explanation: str, context: dict[str, Any], highlighted: Sequence[int]) -> Messages:
    text = highlight(context["tokens"], highlighted)
    return [{"role": "system", "content": FUZZ_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\nExcerpt: {text}\nAnswer (1 or 0):"}]


_BIT = re.compile(r"\b([01])\b|\b(yes|no)\b", re.IGNORECASE)


def parse_bit(reply: str) -> bool:
    """The first 1/0 (or yes/no) in a reply; `MalformedReply` when there is none."""
    m = _BIT.search(reply or "")
    if m is None:
        raise MalformedReply(f"the scorer replied {reply[:60]!r}, not 1 or 0")
    return (m.group(1) or m.group(2)).lower() in ("1", "yes")


def parse_explanation(reply: str) -> str:
    """The first non-empty line of a reply, stripped of quotes and a leading 'Explanation:'."""
    for line in (reply or "").splitlines():
        line = re.sub(r"^\s*(explanation|answer)\s*:\s*", "", line, flags=re.IGNORECASE).strip().strip("\"'` ")
        if line:
            return line[:200]
    raise MalformedReply(f"the explainer replied {str(reply)[:60]!r}, no explanation in it")
