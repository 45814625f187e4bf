"""`--set FIELD=VALUE` for the benchmark scripts: SaeConfig fields overridden in every SAE of a run."""

from __future__ import annotations

import dataclasses
import json

from saekit import SaeConfig


def parse_overrides(items: list[str]) -> dict:
    """{field: value} from FIELD=VALUE strings (VALUE read as JSON, else kept as a string); unknown fields refused."""
    fields = {f.name for f in dataclasses.fields(SaeConfig)}
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of SaeConfig's fields")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def with_overrides(cfg: SaeConfig, overrides: dict) -> SaeConfig:
    """`cfg` with `overrides` applied (SaeConfig validates the result)."""
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
