"""Architecture counts of the code base (run from the repository root: ``python tools/arch_counts.py``).

- settings declared in more than one config dataclass (a dataclass named ``*Config`` or one of a
  command's tyro configs under ``scripts/``), by field name. A field whose annotation is a section
  (``*Config``, ``*Overrides``) is not a setting, and a field inherited from a section is declared
  only where the section declares it. Names in ``SAME_NAME_DIFFERENT_MEANING`` are reported apart,
  each with its reason, and only while they are declared in exactly the places listed there: a
  new declaration of such a name counts in the main list again;
- places (files outside tests/) that choose between the weight-free segmenter and SAM2: files
  that construct ``GeodesicSegmenter(`` or ``BatchedSAM2Decoder(`` and hold the literal
  ``"weightfree"`` (a benchmark of one segmenter builds it without choosing);
- places (files outside tests/) that decide which observation keys exist: files whose code reads
  an optional-key switch as an attribute (``.obs_sam_prob``, ``.obs_mask_prior``,
  ``.obs_image_embedding``, ``.obs_prior_click``, ``.action_mask`` other than a method call, or
  compares ``.mode == "simulated_user"``); strings (docstrings, messages, the dotted names of
  saved settings) are not code;
- tracked ``.py`` files over 400 lines.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("sam_batch", "gpu_env", "ppo", "scripts", "cli", "bench")
SWITCHES = {"obs_sam_prob", "obs_mask_prior", "obs_image_embedding", "obs_prior_click",
            "action_mask"}
SECTION = re.compile(r"(Config|Overrides)$")

SAME_NAME_DIFFERENT_MEANING = {
    "batch_size": ({"ppo/command_options.py:EpisodesConfig", "scripts/embed.py:EmbedConfig"},
                   "episodes evaluated at once vs images per SAM2 encoder forward"),
    "compile": ({"ppo/config.py:RunConfig", "scripts/bench.py:BenchConfig"},
                "compile a training run vs add the suite's compiled cases (parity-gated)"),
    "count": ({"scripts/embed.py:EmbedConfig", "scripts/render.py:DatasetSheet"},
              "synthetic images generated (None: the generator's default) vs frames shown"),
    "kind": ({"ppo/config.py:PolicyConfig", "sam_batch/config.py:SegmenterConfig"},
             "policy network vs segmenter, section-local names of --policy / --segmenter (saved "
             "configs key them as kind)"),
    "out": ({"ppo/command_options.py:ResultsConfig", "scripts/embed.py:EmbedConfig",
             "scripts/render.py:DatasetSheet", "scripts/render.py:EpisodeStrips"},
            "results folder vs feature-cache directory vs one PNG vs folder of episode PNGs"),
    "out_dir": ({"ppo/config.py:RunConfig", "scripts/bench.py:BenchConfig"},
                "parent of run folders vs folder of benchmark reports"),
    "overwrite": ({"ppo/command_options.py:OverwriteConfig", "scripts/embed.py:EmbedConfig"},
                  "replace an output folder's outputs instead of refusing vs re-encode a sound "
                  "cache that embed would keep (it never refuses)"),
    "seed": ({"ppo/command_options.py:EpisodesConfig", "ppo/config.py:RunConfig",
              "scripts/render.py:DatasetSheet"},
             "an evaluation's random baseline (and learned clicker) vs a training run's env, "
             "policy init and sampling vs the synthetic generator of a contact sheet"),
}
"""Names declared more than once on purpose: ``{name: (its places, why they differ)}``."""


REV = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
"""The commit measured (``python tools/arch_counts.py <rev>``; default HEAD)."""


def all_files() -> list[Path]:
    out = subprocess.run(["git", "ls-tree", "-r", "--name-only", REV], capture_output=True,
                         text=True, check=True)
    return [Path(p) for p in out.stdout.split() if p.endswith(".py")]


def read(path: Path) -> str:
    return subprocess.run(["git", "show", f"{REV}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def product_files() -> list[Path]:
    return [p for p in all_files() if p.parts[0] in PACKAGES]


def is_dataclass(node: ast.ClassDef) -> bool:
    for d in node.decorator_list:
        name = d.func if isinstance(d, ast.Call) else d
        if getattr(name, "id", None) == "dataclass" or getattr(name, "attr", None) == "dataclass":
            return True
    return False


def config_fields() -> dict[str, list[str]]:
    where = defaultdict(list)
    for path in product_files():
        for node in ast.walk(ast.parse(read(path))):
            if not (isinstance(node, ast.ClassDef) and is_dataclass(node)):
                continue
            if not (node.name.endswith("Config") or path.parts[0] in ("scripts", "cli")):
                continue
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if SECTION.search(getattr(stmt.annotation, "id", "")):
                        continue  # a section of a composed config, not a setting
                    where[stmt.target.id].append(f"{path}:{node.name}")
    return {k: v for k, v in where.items() if len(v) > 1}


def reads_switch(source: str) -> bool:
    """Whether code (not a string) reads an optional-observation-key switch."""
    tree = ast.parse(source)
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in SWITCHES and id(node) not in called:
            return True
        if (isinstance(node, ast.Compare) and getattr(node.left, "attr", None) == "mode"
                and isinstance(node.ops[0], ast.Eq)
                and getattr(node.comparators[0], "value", None) == "simulated_user"):
            return True
    return False


def main() -> int:
    dup = config_fields()
    apart = {k: v for k, v in dup.items() if k in SAME_NAME_DIFFERENT_MEANING
             and set(v) == SAME_NAME_DIFFERENT_MEANING[k][0]}
    dup = {k: v for k, v in dup.items() if k not in apart}
    seg = [str(p) for p in product_files()
           if re.search(r"\b(GeodesicSegmenter|BatchedSAM2Decoder)\(", read(p))
           and '"weightfree"' in read(p)]
    obs = [str(p) for p in product_files() if reads_switch(read(p))]
    big = [f"{p} ({n})" for p in all_files() if (n := len(read(p).splitlines())) > 400]
    print(f"settings declared in more than one config dataclass: {len(dup)}")
    for k, v in sorted(dup.items()):
        print(f"  {k}: {', '.join(v)}")
    print(f"same name, different meaning (SAME_NAME_DIFFERENT_MEANING): {len(apart)}")
    for k, v in sorted(apart.items()):
        print(f"  {k}: {', '.join(v)}: {SAME_NAME_DIFFERENT_MEANING[k][1]}")
    print(f"places that construct (choose) a segmenter: {len(seg)}: {', '.join(seg)}")
    print(f"places that decide observation keys: {len(obs)}: {', '.join(obs)}")
    print(f".py files over 400 lines: {len(big)}: {', '.join(big)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
