"""One audiosim service per Datasette instance, opened on first use and called off the event loop."""

from __future__ import annotations

import asyncio
import collections
import threading
import weakref

from audiosim.service import AudioSim

from .config import PluginConfig, load_config


class LRU:
    """A small thread-safe least-recently-used cache (spectrogram thumbnails)."""

    def __init__(self, size: int):
        self.size, self._items, self._lock = size, collections.OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class ServiceHolder:
    """Holds the service for one Datasette. Calls are serialised: the catalog connection and Milvus Lite
    are single-process, single-connection resources."""

    def __init__(self, config: PluginConfig):
        self.config = config
        self._service: AudioSim | None = None
        self._lock = threading.Lock()
        self.thumbnails = LRU(512)

    def call(self, fn):
        """Run ``fn(service)`` in this thread, holding the lock."""
        with self._lock:
            if self._service is None:
                self._service = AudioSim(self.config.settings)
            return fn(self._service)

    async def run(self, fn):
        return await asyncio.get_running_loop().run_in_executor(None, self.call, fn)


_holders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def holder_for(datasette) -> ServiceHolder | None:
    if datasette not in _holders:
        config = await load_config(datasette)
        if config is None:
            return None
        _holders[datasette] = ServiceHolder(config)
    return _holders[datasette]


def cached_holder(datasette) -> ServiceHolder | None:
    """The holder if one was made already (for synchronous hooks such as SQL functions)."""
    return _holders.get(datasette)
