"""Packaging and import hygiene: the wheel ships the widgets' assets; importing saekit has no side effects."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_widget_assets_and_the_cli(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("saekit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("saekit/_widgets/")}
    assert {p.name for p in (ROOT / "widgets").iterdir() if p.suffix in (".js", ".css")} <= shipped
    assert any(n.endswith("entry_points.txt") for n in names) and "saekit/cli.py" in names
    # the shipped SAEs travel with the package (their safetensors are exempted from .gitignore's *.safetensors)
    shipped_saes = {p.relative_to(ROOT).as_posix() for p in (ROOT / "saekit" / "pretrained").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert any(n.endswith("sae_weights.safetensors") for n in shipped_saes)
    assert shipped_saes <= set(names), sorted(shipped_saes - set(names))[:5]


def test_import_has_no_side_effects(tmp_path):
    code = (
        "import sys, saekit; "
        "heavy = [m for m in ('nnsight', 'transformers', 'anywidget', 'matplotlib') if m in sys.modules]; "
        "print(heavy)"
    )
    env = {"HOME": str(tmp_path), "SAEKIT_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert not (tmp_path / "cache").exists()
    assert r.stderr == ""
