"""SAM2 backend: model building, the on-disk feature cache, the batched decoder and the
weight-free segmenter that stands in for SAM2 when no checkpoint is available.

Nothing is imported eagerly: importing ``sam_batch`` does not import ``sam2`` (whose own
``__init__`` initialises hydra globally). Import the submodules you need.
"""
