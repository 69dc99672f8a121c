"""Reference implementations and fixtures shared by ``tests/`` and ``bench/``.

Neither of those two folders imports the other: what both need lives here. Not part of the
installed distribution (it needs the test extras, e.g. SciPy):

- ``metrics_ref``: SciPy/NumPy references of Dice, IoU and the boundary metrics;
- ``ritm_clicker``: RITM's clicker, the reference of the GPU oracle;
- ``prototype_baseline``: the prototype's one-episode-at-a-time env (NumPy/SciPy on the
  host), the baseline every throughput figure is measured against;
- ``sam_fixtures``: tiny random-weight SAM2 models, random features and episodes.
"""
