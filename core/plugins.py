"""Find every embedder: the built-in ones and those of installed plugins (entry point group ``audiosim``)."""

from __future__ import annotations

import pluggy

from . import hookspecs

_BUILTIN = ("audiosim.embedders.panns", "audiosim.embedders.aisfx", "audiosim.embedders.dsp")


def plugin_manager() -> pluggy.PluginManager:
    import importlib

    pm = pluggy.PluginManager("audiosim")
    pm.add_hookspecs(hookspecs)
    for name in _BUILTIN:
        pm.register(importlib.import_module(name), name)
    pm.load_setuptools_entrypoints("audiosim")
    return pm


def embedder_classes() -> dict[str, type]:
    """Every registered embedder class by name, in registration order (best first for the built-ins)."""
    found: list[type] = []
    plugin_manager().hook.register_embedders(register=found.append)
    classes: dict[str, type] = {}
    # pluggy calls the last registered plugin first; reverse so built-ins keep their preference order.
    for cls in reversed(found):
        classes.setdefault(cls.name, cls)
    return classes
