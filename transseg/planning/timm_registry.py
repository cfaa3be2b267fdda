"""The names in the installed timm's registry, without importing timm into a planning process.

Importing timm imports torch: about 3 s, and a planning process that then forks preprocessing
workers carries torch into each of them (it doubled ``transseg_plan_and_preprocess``'s time and
tripled its memory). So the registry (every model name, the pretrained tags, the models of the
modules TransSeg can inflate) is read once per timm version, in a child process unless timm is
already imported, and kept as JSON in ``$XDG_CACHE_HOME/transseg`` (``~/.cache/transseg``).
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from ..files import save_json

logger = logging.getLogger(__name__)
# timm modules whose models the model builder can inflate: plain ViTs (ViT, DeiT, BEiT) and Swin
SUPPORTED_TIMM_MODULES = ("vision_transformer", "deit", "beit", "swin_transformer")


def registry_from_timm() -> dict:
    """Read the registry from timm itself (imports it)."""
    import timm

    return {"timm_version": timm.__version__, "models": timm.list_models(), "pretrained": timm.list_pretrained(),
            "supported": sorted(n for m in SUPPORTED_TIMM_MODULES for n in timm.list_models(module=m))}


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transseg" / f"timm-{importlib.metadata.version('timm')}-registry.json"


def _from_child_process() -> dict:
    code = "import json; from transseg.planning.timm_registry import registry_from_timm as r; print(json.dumps(r()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no output")
    return json.loads(result.stdout)


@lru_cache(maxsize=None)
def timm_registry() -> dict:
    """{'models', 'pretrained', 'supported'} name lists of the installed timm (cached per timm version)."""
    path = cache_path()
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if "timm" in sys.modules:
        registry = registry_from_timm()
    else:
        try:
            registry = _from_child_process()
        except (OSError, RuntimeError, ValueError) as error:
            logger.debug("reading timm's registry in a child process failed (%s); importing timm here", error)
            registry = registry_from_timm()
    try:
        save_json(registry, path, indent=None)
    except OSError as error:   # a read-only home: read it again next time
        logger.debug("timm registry not cached at %s (%s)", path, error)
    return registry
