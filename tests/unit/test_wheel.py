"""The wheel is the product: built by `pip wheel .`, installed into a fresh virtualenv and run from a directory
outside the checkout, it renders every service's templates and deploys the bundled app (issue 8: the wheel used
to miss templates/ and apps/, and installed a top-level package named `roles`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.installed import REPO, build_wheel, install

SERVICES = REPO / "deploykit" / "services"

# Run inside the installed package: every template renders (each service's state for every lab host), and the
# bundled app's files are all there.
PROBE = r"""
import json, sys
from pathlib import Path
import deploykit
from deploykit.apply.phases import desired_states
from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services import render
from deploykit.services.app.config import app_source

used = set()
env = render.environment()
get = env.get_template
env.get_template = lambda name, *a, **k: (used.add(name), get(name, *a, **k))[1]
files = 0
for path in sys.argv[1:]:
    inv = load_inventory(Path(path))
    states = desired_states(inv, plan_placement(inv), lambda n: Secret(n, "s3cr3t" + n.replace("-", "")))
    files += sum(len(s.files) for per_host in states.values() for s in per_host)
print(json.dumps({
    "package": deploykit.__file__,
    "templates": sorted(env.list_templates()),
    "rendered": sorted(used),
    "files": files,
    "app_files": sorted(f.path for f in app_source(inv).files),
}))
"""


def source_templates() -> list[str]:
    return sorted(f"{p.parent.parent.name}/{p.name}" for p in SERVICES.glob("*/templates/*.j2"))


def source_app_files() -> list[str]:
    app = SERVICES / "app" / "chirp"
    return sorted(p.relative_to(app).as_posix() for p in app.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_every_template_and_the_bundled_app_and_no_top_level_roles(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"deploykit"}
    assert sorted(n.removeprefix("deploykit/services/").replace("/templates/", "/")
                  for n in names if n.endswith(".j2")) == source_templates()
    app = "deploykit/services/app/chirp/"
    assert sorted(n.removeprefix(app) for n in names if n.startswith(app)) == source_app_files()


def test_installed_in_a_fresh_venv_it_renders_every_template_from_outside_the_checkout(wheel: Path,
                                                                                        tmp_path: Path) -> None:
    python, site = install(wheel, tmp_path / "venv")
    work = tmp_path / "elsewhere"
    work.mkdir()
    for name in ("lab.yml", "example.yml"):  # the lab turns the watchdog off, the example keeps it
        shutil.copy(REPO / "inventories" / name, work / name)
    run = subprocess.run([str(python), "-c", PROBE, "lab.yml", "example.yml"], capture_output=True, text=True,
                         cwd=work, timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["package"].startswith(str(site))  # the installed copy, not the checkout
    assert got["templates"] == source_templates()
    assert got["rendered"] == source_templates()
    assert got["files"] > 100
    assert got["app_files"] == source_app_files()
