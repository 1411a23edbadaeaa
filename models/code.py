"""A package's code: the source text of the model modules, executed into private modules on load.

A package written by one Laurel version runs its own code in another: ``from models import x`` inside the
package's source resolves to the package's own copy of ``x``, never to the installed one.
"""

from __future__ import annotations

import builtins
import linecache
import sys
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from models.signing import PackageError, canonical_json, sha256_hex

CODE_MODULES: tuple[str, ...] = (
    "models.network",
    "models.losses",
    "models.preprocessing",
    "models.aggregation",
    "models.training",
)
DEFAULT_ENTRY: dict[str, str] = {
    "build": "models.training:initial_weights",
    "apply": "models.training:apply_volume",
    "learn": "models.training:learn_volume",
    "train": "models.training:train",
    "delta": "models.aggregation:delta",
    "apply_delta": "models.aggregation:apply_delta",
    "scale": "models.aggregation:scale",
    "average": "models.aggregation:average",
    "linear_merge": "models.aggregation:linear_merge",
    "delta_merge": "models.aggregation:delta_merge",
    "partial_merge": "models.aggregation:partial_merge",
}


def default_code() -> dict[str, str]:
    """Source text of this Laurel's model code modules (what a new package carries)."""
    here = Path(__file__).resolve().parent
    return {name: (here / f"{name.split('.')[-1]}.py").read_text(encoding="utf-8") for name in CODE_MODULES}


class PackageCode:
    """The executed code of a package: private modules made from the package's source text.

    ``import models.x`` / ``from models import x`` inside package code resolve to the package's own module
    ``x``; importing any other ``models`` module is an ImportError; third-party imports are ordinary.
    Instances are shared by every package with identical code (cached by the code's sha256).
    """

    _cache: ClassVar[dict[str, PackageCode]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = {str(k): str(v) for k, v in sources.items()}
        self.sha256 = sha256_hex(canonical_json(self.sources))
        self.prefix = f"laurel_model_{self.sha256[:16]}"
        self.modules: dict[str, types.ModuleType] = {}
        self._root = types.ModuleType(f"{self.prefix}.models")
        self._builtins = dict(vars(builtins))
        self._builtins["__import__"] = self._import
        self._lock = threading.RLock()
        with self._lock:
            for name in self.sources:
                self._module(name)

    @classmethod
    def get(cls, sources: Mapping[str, str]) -> PackageCode:
        """The shared executed code for ``sources``."""
        sha = sha256_hex(canonical_json({str(k): str(v) for k, v in sources.items()}))
        with cls._cache_lock:
            if sha not in cls._cache:
                cls._cache[sha] = cls(sources)
            return cls._cache[sha]

    def _module(self, name: str) -> types.ModuleType:
        if name in self.modules:
            return self.modules[name]
        if name not in self.sources:
            raise ImportError(f"package code may only import its own modules; {name} is not in the package")
        short = name.split(".")[-1]
        mod = types.ModuleType(f"{self.prefix}.{short}")
        mod.__dict__["__builtins__"] = self._builtins
        filename = f"<{self.prefix}/{short}.py>"
        mod.__file__ = filename
        src = self.sources[name]
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        sys.modules[mod.__name__] = mod
        self.modules[name] = mod
        setattr(self._root, short, mod)
        exec(compile(src, filename, "exec"), mod.__dict__)  # noqa: S102 - trusted (verified) package code
        return mod

    def _import(
        self,
        name: str,
        globals_: Mapping[str, Any] | None = None,
        locals_: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        if level == 0 and (name == "models" or name.startswith("models.")):
            with self._lock:
                if name == "models":
                    for sub in fromlist or ():
                        self._module(f"models.{sub}")
                    return self._root
                mod = self._module(name)
                return mod if fromlist else self._root
        return builtins.__import__(name, globals_, locals_, fromlist or (), level)

    def function(self, ref: str) -> Callable[..., Any]:
        """The function named ``module:function`` in this code."""
        module, _, attr = ref.partition(":")
        fn = getattr(self._module(module), attr, None)
        if not callable(fn):
            raise PackageError(f"package code has no function {ref}")
        return fn
