"""Slim the serving image's virtual environment down to what the servers import.

Run by the serving image's build (see the Dockerfile) with the venv's own Python, after the
pinned serving dependencies are installed without byte code (``pip install --no-compile``):

1. import every serving entry point (both apps, both servers, the health probe), as a worker
   does at start;
2. delete the subpackages of SCIPY that nothing imported: XGBoost imports ``scipy.sparse`` when
   it loads (for sparse inputs the API never sends), which is about a fifth of scipy;
3. delete the libraries' own test suites, pip and setuptools, and treelite and tl2cgen (every
   file their RECORD lists);
4. strip the symbol tables of the extension modules (``strip --strip-unneeded``; uvloop alone
   drops from 13 to 2 MB), but not the libraries auditwheel vendored into ``*.libs`` folders:
   patchelf rewrote those, and a stripped copy no longer loads;
5. compile byte code for exactly the modules the import loaded, so a read-only container
   starts as fast as a compiled one, without byte code for the rest;
6. import the entry points again in a fresh process and score with XGBoost: a library the
   stripping broke fails the build, not a container.

The container test (``make container-test``) proves the result serves: both apps answer
/predict from it.
"""

from __future__ import annotations

import compileall
import csv
import importlib
import shutil
import subprocess  # nosec B404 - strip and the venv's own python, fixed arguments
import sys
import sysconfig
from pathlib import Path

#: What a serving process imports before it takes a request.
ENTRY_POINTS = (
    "api.flask_app",
    "api.fastapi_app.app",
    "api.fastapi_app.__main__",
    "api.healthcheck",
    "gunicorn.app.wsgiapp",
    "gunicorn.workers.gthread",
    "uvicorn.main",
    "xgboost",
)
#: Packages whose unimported subpackages are removed (the large ones the servers touch little).
PRUNED_PACKAGES = ("scipy",)
#: Installers: nothing in a serving container installs anything. The compiler side of
#: ``xgbops.compiled``: the image has no C compiler, so it never compiles trees, and compiled
#: trees that come with a model load through ctypes alone.
REMOVED_DISTRIBUTIONS = ("pip", "setuptools", "treelite", "tl2cgen")
#: Run in a fresh process once the venv is slimmed: the imports and one prediction.
VERIFY = (
    "import numpy as np, xgboost as xgb\n"
    + "".join(f"import {name}\n" for name in ENTRY_POINTS)
    + "x = np.random.default_rng(0).random((64, 3)); y = (x[:, 0] > 0.5).astype(float)\n"
    + "b = xgb.train({'objective': 'binary:logistic'}, xgb.DMatrix(x, label=y), 3)\n"
    + "assert b.inplace_predict(x[:2]).shape == (2,)\n"
)


def main() -> int:
    """Import the entry points, prune, then compile what was loaded."""
    site = Path(sysconfig.get_paths()["purelib"])
    for name in ENTRY_POINTS:
        importlib.import_module(name)
    loaded = set(sys.modules)
    removed = 0
    for package in PRUNED_PACKAGES:
        for child in sorted((site / package).iterdir()):
            subpackage = f"{package}.{child.name}"
            if child.is_dir() and (child / "__init__.py").is_file() and subpackage not in loaded:
                removed += _size(child)
                shutil.rmtree(child)
    for tests in sorted(site.glob("**/tests"), key=lambda p: len(p.parts), reverse=True):
        if tests.is_dir():
            removed += _size(tests)
            shutil.rmtree(tests)
    for name in REMOVED_DISTRIBUTIONS:
        removed += _uninstall(site, name)
    stripped = _strip(site)
    files = sorted({str(m.__file__) for m in list(sys.modules.values()) if _compilable(m, site)})
    for path in files:
        compileall.compile_file(path, quiet=1)
    subprocess.run([sys.executable, "-c", VERIFY], check=True)  # nosec B603
    print(
        f"slim_venv: removed {removed / 1e6:.1f} MB, stripped {stripped / 1e6:.1f} MB, "
        f"compiled {len(files)} loaded modules"
    )
    return 0


def _uninstall(site: Path, name: str) -> int:
    """Delete every file a distribution's RECORD lists (what ``pip uninstall`` would)."""
    removed = 0
    for info in site.glob(f"{name}-*.dist-info"):
        with open(info / "RECORD", encoding="utf-8", newline="") as record:
            paths = [site / row[0] for row in csv.reader(record) if row]
        for path in paths:
            if path.is_file():
                removed += path.stat().st_size
                path.unlink()
        for folder in sorted({p.parent for p in paths}, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and folder != site and not any(folder.iterdir()):
                folder.rmdir()
        shutil.rmtree(info, ignore_errors=True)
    return removed


def _strip(site: Path) -> int:
    """Strip the extension modules' symbol tables; returns the bytes saved (0 without strip)."""
    strip = shutil.which("strip")
    if strip is None:
        print("slim_venv: no strip (binutils): shared libraries left as they are")
        return 0
    saved = 0
    for library in sorted(site.rglob("*.so*")):
        vendored = any(part.endswith(".libs") for part in library.relative_to(site).parts)
        if library.is_file() and not library.is_symlink() and not vendored:
            before = library.stat().st_size
            subprocess.run([strip, "--strip-unneeded", str(library)], check=True)  # nosec B603
            saved += before - library.stat().st_size
    return saved


def _compilable(module: object, site: Path) -> bool:
    path = getattr(module, "__file__", None)
    return bool(path) and str(path).endswith(".py") and Path(str(path)).is_relative_to(site)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


if __name__ == "__main__":
    sys.exit(main())
