"""Evaluation of click policies on held-out images, everything but the trained agent's network
(that part is ``ppo.evaluate``):

- ``clickers``: the baselines (RITM oracle, learned clicker, random) and the adapter for agents;
- ``curves``: Dice/IoU/boundary after each click and NoC (``evaluate_clicker``, ``Curves``);
- ``results``: one evaluation's table and files (``format_table``, ``write_results``);
- ``figures``: Dice-vs-clicks plots, drawn without choosing a matplotlib backend;
- ``seeds``: mean ± std over training seeds from several ``results.json``.
"""

from gpu_env.evaluation.clickers import (ActionClicker, Clicker, OracleClicker, PriorClicker,
                                         RandomClicker)
from gpu_env.evaluation.curves import NOC_THRESHOLDS, Curves, evaluate_clicker
from gpu_env.evaluation.figures import new_figure, plot_curves, plot_seeds, save_figure
from gpu_env.evaluation.results import format_table, write_results
from gpu_env.evaluation.seeds import (RunSettings, aggregate_seeds, format_seed_tables,
                                      load_results, read_settings, write_seeds)

__all__ = ["NOC_THRESHOLDS", "ActionClicker", "Clicker", "Curves", "OracleClicker",
           "PriorClicker", "RandomClicker", "RunSettings", "aggregate_seeds", "evaluate_clicker",
           "format_seed_tables", "format_table", "load_results", "new_figure", "plot_curves",
           "plot_seeds", "read_settings", "save_figure", "write_results", "write_seeds"]
