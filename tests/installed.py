"""deploykit as a user gets it: the wheel `pip wheel .` builds, installed into a fresh virtualenv.

Shared by tests/unit/test_wheel.py (renders every template from the installed package) and the e2e test that
plans the running lab with it from outside the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """`pip wheel .` of a copy of the checkout's sources (pip builds in the source tree: building the checkout
    itself would leave build/ and *.egg-info there, and two test runs at once would share them)."""
    src = out / "src"
    shutil.copytree(REPO / "deploykit", src / "deploykit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--disable-pip-version-check", "-w", str(out), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (found,) = out.glob("deploykit-*.whl")
    return found


def install(wheel: Path, venv: Path) -> tuple[Path, Path]:
    """A fresh virtualenv holding deploykit from `wheel`; its dependencies come from this test run's
    environment through a path entry (so the editable install of the checkout living there is not activated:
    a path entry's .pth files are not processed). Returns (python, site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site
