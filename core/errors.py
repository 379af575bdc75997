"""The exceptions audiosim raises: one root, one subclass per thing that can go wrong."""


class AudioSimError(Exception):
    """Root of every error audiosim raises on purpose."""


class DecodeError(AudioSimError):
    """A file could not be read as audio."""


class UnsupportedFormat(DecodeError):
    """No decoder installed can read this kind of file."""


class ModelNotAvailable(AudioSimError):
    """An embedder cannot run here (missing weights or package)."""


class ModelMismatch(AudioSimError):
    """Vectors from one model were about to meet vectors from another."""


class ChecksumMismatch(AudioSimError):
    """A downloaded file is not the file we asked for."""


class VectorStoreUnavailable(AudioSimError):
    """Milvus could not be reached or opened."""


class VectorStoreLocked(VectorStoreUnavailable):
    """A Milvus Lite store is held by another process."""


class CatalogUnavailable(AudioSimError):
    """The catalog database could not be reached or opened."""


class CatalogBusy(CatalogUnavailable):
    """A write lost to a concurrent writer (deadlock, lock wait timeout); it is safe to run again."""


class ClipNotFound(AudioSimError):
    """No clip in the catalog has that id or path."""
