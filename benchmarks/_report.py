"""Write one benchmark's section into BENCHMARKS.md (replacing that section if present)."""

from __future__ import annotations

import platform
import re
import shlex
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nMeasured by hand with the scripts in `benchmarks/`; each section names the command that produced it.\n"


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    return f"{platform.processor() or platform.machine()}; {dev}; torch {torch.__version__}; {date.today().isoformat()}"


def write_section(title: str, body: str) -> None:
    text = REPORT.read_text() if REPORT.exists() else HEADER
    script = Path(sys.argv[0]).resolve()
    where = script.relative_to(ROOT) if script.is_relative_to(ROOT) else Path("benchmarks") / script.name
    cmd = "python " + shlex.join([str(where), *sys.argv[1:]])
    section = f"## {title}\n\nCommand: `{cmd}`  \nMachine: {machine()}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    REPORT.write_text(text)
