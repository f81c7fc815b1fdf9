"""A model's trees compiled to native code (treelite + tl2cgen), for serving.

XGBoost's ``inplace_predict`` costs about 200 µs for one row of the default model, most of it
fixed overhead; the same trees compiled to a shared library answer in under 10 µs, with the
same outputs. The library is built when a model is exported to a serving folder
(:func:`compile_into`), cached by key (the booster's digest, tl2cgen, the machine), and checked
against XGBoost on probe rows each time it is loaded (:func:`load`). Loading it needs ctypes
only; compiling needs treelite, tl2cgen and a C compiler. Everything here is optional: without
a compiler, on another machine type or when a check fails, XGBoost scores as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
import xgboost as xgb

from xgbops.files import write_atomically

log = structlog.get_logger(__name__)

#: The compiled trees and what they were compiled from, beside ``booster.ubj``.
LIBRARY_FILE = "trees.so"
LIBRARY_SPEC = "trees.json"
FILES = (LIBRARY_FILE, LIBRARY_SPEC)
#: Largest difference from XGBoost's probability accepted on the probe rows.
TOLERANCE = 1e-6
#: The compiler's options and the library's layout (ROWS_SOURCE); both part of the cache key.
OPTIONS = ("-O2",)
LAYOUT = "xgbops-rows-1"
PROBE_ROWS = 64


#: A C function compiled into the library beside tl2cgen's code: every row of a float32 matrix
#: through the generated ``predict`` (its signature is the header's), NaN meaning missing.
ROWS_SOURCE = """\
/* xgbops: score the rows of a float32 matrix with this library's predict(). */
#include <math.h>
#include <stdint.h>
#include "header.h"

int32_t xgbops_outputs(void) { return N_TARGET * MAX_N_CLASS; }

void xgbops_predict_rows(const float* rows, int64_t count, int32_t width,
                         union Entry* entry, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    const float* row = rows + i * width;
    for (int32_t j = 0; j < width; ++j) {
      if (isnan(row[j])) {
        entry[j].missing = -1;
      } else {
        entry[j].fvalue = row[j];
      }
    }
    out[i] = 0.0f;
    predict(entry, 0, out + i);
  }
}
"""


class CompiledTrees:
    """A loaded library: probabilities for a featurised float32 matrix.

    It is called through :class:`ctypes.PyDLL`, which keeps the GIL: the trees take a few
    microseconds per row (:class:`xgbops.model.Model` calls them for small matrices only),
    while taking the GIL back from the worker's other threads (history writer, shadow scorer)
    after a call that released it cost about 150 µs per request. The function is reentrant, so
    the worker's request threads may call it at once (tl2cgen's own batch predictor may be
    called by one thread at a time).

    Raises:
        OSError, AttributeError: the file is not such a library.
        ValueError: the library was built for another width or for several outputs.
    """

    def __init__(self, path: Path, width: int) -> None:
        self.path = path
        self.width = width
        self.key = _spec_key(path.parent)
        library = ctypes.PyDLL(str(path))
        features, outputs = int(library.get_num_feature()), int(library.xgbops_outputs())
        if features != width or outputs != 1:
            raise ValueError(
                f"{path}: {features} features and {outputs} outputs, not {width} and 1"
            )
        self._rows = library.xgbops_predict_rows
        self._rows.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._rows.restype = None

    def __reduce__(self) -> tuple[Any, tuple[str, int, str | None]]:
        """Pickled as its path and key (a Dask worker reloads it): a library handle cannot
        travel, and where that file is missing or another one, XGBoost scores."""
        return _reload, (str(self.path), self.width, self.key)

    def predict(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Positive-class probability per row, as ``Booster.inplace_predict`` gives it."""
        rows = np.ascontiguousarray(features, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected rows of {self.width} features, got shape {rows.shape}")
        result = np.empty(rows.shape[0], dtype=np.float32)
        entry = np.empty(self.width, dtype=np.float32)  # the library's row buffer
        self._rows(
            rows.ctypes.data, rows.shape[0], self.width, entry.ctypes.data, result.ctypes.data
        )
        return result.astype(np.float64)


def _reload(path: str, width: int, key: str | None) -> CompiledTrees | None:
    """The library at ``path`` if it is the one of ``key`` and loads here, else None."""
    if key is None or _spec_key(Path(path).parent) != key:
        return None
    try:
        return CompiledTrees(Path(path), width)
    except (OSError, AttributeError, ValueError):
        return None


def library_key(booster_path: Path) -> str:
    """What a library is valid for: the booster's bytes, tl2cgen's version, the machine type,
    the library's layout and the compiler's options. Another value means another library."""
    digest = hashlib.sha256(booster_path.read_bytes())
    for part in (_tl2cgen_version() or "-", platform.machine(), LAYOUT, *OPTIONS):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


def compile_into(model_dir: Path, cache: Path) -> str:
    """Give ``model_dir`` its compiled trees, from ``cache`` when this booster was compiled
    before; returns what happened (``compiled``, ``cached``, ``present``) or why not."""
    booster_path = model_dir / "booster.ubj"
    if _tl2cgen_version() is None:
        return "not compiled: tl2cgen is not installed"
    key = library_key(booster_path)
    if _spec_key(model_dir) == key and (model_dir / LIBRARY_FILE).is_file():
        return "present"
    cached = cache / f"{key}.so"
    outcome = "cached"
    if not cached.is_file():
        compiler = _compiler()
        if compiler is None:
            return "not compiled: no C compiler (gcc, cc or clang) on PATH"
        try:
            _compile(booster_path, cached, compiler)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # any failure: XGBoost
            log.warning("trees.compile_failed", model_dir=str(model_dir), error=repr(exc))
            return f"not compiled: {type(exc).__name__}: {exc}"
        outcome = "compiled"
    write_atomically(model_dir / LIBRARY_FILE, cached.read_bytes())
    spec = {"key": key, "tl2cgen": _tl2cgen_version(), "machine": platform.machine()}
    write_atomically(model_dir / LIBRARY_SPEC, json.dumps(spec).encode())
    log.info("trees.ready", model_dir=str(model_dir), outcome=outcome)
    return outcome


def load(model_dir: Path, booster: xgb.Booster, width: int) -> CompiledTrees | None:
    """The compiled trees of ``model_dir`` if they belong to this booster and this machine and
    agree with XGBoost on probe rows; None otherwise (XGBoost then scores)."""
    library = model_dir / LIBRARY_FILE
    if not library.is_file():
        return None
    try:
        if _spec_key(model_dir) != library_key(model_dir / "booster.ubj"):
            log.warning("trees.stale", library=str(library))
            return None
        trees = CompiledTrees(library, width)
        probe = probe_rows(width)
        gap = float(
            np.abs(trees.predict(probe) - booster.inplace_predict(probe, missing=np.nan)).max()
        )
    except Exception as exc:  # pylint: disable=broad-exception-caught  # any failure: XGBoost
        log.warning("trees.unusable", library=str(library), error=repr(exc))
        return None
    if gap > TOLERANCE:
        log.warning("trees.disagree", library=str(library), gap=gap)
        return None
    return trees


def probe_rows(width: int) -> npt.NDArray[np.float32]:
    """Rows that reach many leaves: missing values, zeros, ones and spread-out numbers."""
    rng = np.random.default_rng(0)
    rows = rng.normal(0.0, 100.0, size=(PROBE_ROWS, width)).astype(np.float32)
    rows[: PROBE_ROWS // 4] = rng.integers(0, 2, size=(PROBE_ROWS // 4, width))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    return rows


def _compile(booster_path: Path, target: Path, compiler: str) -> None:
    # pylint: disable=import-outside-toplevel  # the compiler side is needed at export only
    import tl2cgen
    import treelite

    booster = xgb.Booster()
    booster.load_model(booster_path)
    trees = treelite.frontend.from_xgboost(booster)
    target.parent.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix=".compile-", dir=target.parent) as tmp:
        sources = Path(tmp) / "src"
        tl2cgen.generate_c_code(trees, str(sources), params={"parallel_comp": 2 * cores})
        (sources / "xgbops_rows.c").write_text(ROWS_SOURCE, encoding="utf-8")
        recipe = json.loads((sources / "recipe.json").read_text(encoding="utf-8"))
        recipe["sources"].append({"name": "xgbops_rows", "length": ROWS_SOURCE.count("\n")})
        (sources / "recipe.json").write_text(json.dumps(recipe), encoding="utf-8")
        built = tl2cgen.create_shared(compiler, str(sources), nthread=cores, options=list(OPTIONS))
        os.replace(built, target)


def _spec_key(model_dir: Path) -> str | None:
    try:
        return str(json.loads((model_dir / LIBRARY_SPEC).read_text(encoding="utf-8"))["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _compiler() -> str | None:
    named = os.environ.get("CC")  # the usual way to choose a compiler, if it is GCC-like
    found = [named] if named and shutil.which(named) else []
    return next(iter(found + [n for n in ("gcc", "cc", "clang") if shutil.which(n)]), None)


def _tl2cgen_version() -> str | None:
    try:
        return metadata.version("tl2cgen")
    except metadata.PackageNotFoundError:
        return None
