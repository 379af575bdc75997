"""audiosim: decode audio, embed it, store vectors in Milvus and describe clips in a catalog; search by sound."""

from .errors import (
    AudioSimError,
    CatalogUnavailable,
    ChecksumMismatch,
    ClipNotFound,
    DecodeError,
    ModelMismatch,
    ModelNotAvailable,
    UnsupportedFormat,
    VectorStoreLocked,
    VectorStoreUnavailable,
)
from .settings import Settings

__all__ = [
    "AudioSimError",
    "CatalogUnavailable",
    "ChecksumMismatch",
    "ClipNotFound",
    "DecodeError",
    "ModelMismatch",
    "ModelNotAvailable",
    "Settings",
    "UnsupportedFormat",
    "VectorStoreLocked",
    "VectorStoreUnavailable",
]
