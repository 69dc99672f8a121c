"""The on-disk SAM2 feature cache: one directory per (dataset, model).

Layout of a finished cache ``<dir>/``::

    meta.json          format version, config, checkpoint fingerprint, image size, dtype, ids,
                       original sizes, per-level shapes, ``complete: true``
    image_embed.npy    [N, 256, 64, 64]   (1024 model)
    high_res_0.npy     [N, 32, 256, 256]
    high_res_1.npy     [N, 64, 128, 128]
    done.npy           [N] bool, all true

``meta.json`` also records a fingerprint of each encoded image's pixels (``image_hashes``;
loading with ``images=`` and re-running the encoding name the images that changed, were added
or were removed, and the encoding re-encodes only those: ``sam_batch.cache_images``), and each
level file's size in bytes and a CRC-32 per image row (``files``); loading checks both and names a damaged file with the images it damages, and
re-running the encoding over a damaged cache re-encodes only those images, in place (see
``sam_batch.cache_files``). Caches written before checksums existed still load (sizes and
headers are checked; a log line says checksums are absent) and re-running the encoding over one
records its checksums without re-encoding.

Features are half precision: float16 is stored as ``float16``; bfloat16 as its ``uint16`` bit
pattern (numpy has no bfloat16), the logical dtype being recorded in ``meta.json``. Nothing is
pickled: arrays are plain ``.npy`` read with ``allow_pickle=False``.

Writing is resumable and atomic: everything goes to ``<dir>.partial/``, whose level files are
created at full size up front (a disk too small fails before any encoding) and filled with
ordinary ``pwrite`` calls, never a writable memory map (a full disk is a ``DiskFullError``
naming the file, not a ``SIGBUS``). After each batch the rows are fsynced *before* the per-image
``done.npy`` mask is replaced, so a crash leaves at worst a finished batch not marked done. A
finished ``.partial`` is renamed onto ``<dir>`` (an existing cache at ``<dir>`` is renamed away
first and its files deleted last). Only a directory whose ``meta.json`` says ``complete`` and
whose name is not ``*.partial`` loads.

The encoding writes only into folders of its own (``sam_batch.cache_folder``): ``<dir>`` and
``<dir>.partial`` must be new, empty or hold nothing but a cache's files; a folder holding
anything else is refused whatever the flags, and a cache of another model, dtype, dataset,
split or augmentation is refused, naming what differs, unless ``overwrite``.

The code lives in one file per concept: ``cache_format`` (metadata, levels, storage dtypes,
``FeatureCache``), ``cache_files`` (the row-written ``.npy`` files and their checksums),
``cache_images`` (image fingerprints), ``cache_folder`` (which folders it may write and delete),
``cache_encode`` (writing), ``cache_repair`` (finding and re-encoding damage) and
``cache_load`` (loading). This module is their public face: import from here.
"""

from __future__ import annotations

from sam_batch.cache_encode import encode_to_cache
from sam_batch.cache_files import CacheError
from sam_batch.cache_folder import ForeignFolderError
from sam_batch.cache_format import (CACHE_FORMAT_VERSION, LEVELS, CacheMeta, CacheMismatchError,
                                    FeatureCache, partial_dir, size_report)
from sam_batch.cache_load import load_cache
from sam_batch.cache_repair import find_damage

__all__ = [
    "CACHE_FORMAT_VERSION",
    "LEVELS",
    "CacheError",
    "CacheMeta",
    "CacheMismatchError",
    "FeatureCache",
    "ForeignFolderError",
    "encode_to_cache",
    "find_damage",
    "load_cache",
    "partial_dir",
    "size_report",
]
