"""The plugin hooks audiosim offers. Built-in embedders register through the same hook as third-party ones."""

import pluggy

hookspec = pluggy.HookspecMarker("audiosim")
hookimpl = pluggy.HookimplMarker("audiosim")


@hookspec
def register_embedders(register):
    """Call ``register(EmbedderClass)`` for each embedder this plugin provides."""
