"""Architecture counts of issue 11 (run from the repository root: ``python tools/arch_counts.py``).

- settings declared in more than one config dataclass (a dataclass named ``*Config`` or one of a
  command's tyro configs under ``scripts/``), by field name;
- places (files outside tests/) that choose between the weight-free segmenter and SAM2: files
  that construct ``GeodesicSegmenter(`` or ``BatchedSAM2Decoder(`` and hold the literal
  ``"weightfree"`` (a benchmark of one segmenter builds it without choosing);
- places (files outside tests/) that decide which observation keys exist: files that read an
  optional-key switch as an attribute (``.obs_sam_prob``, ``.obs_mask_prior``,
  ``.obs_image_embedding``, ``.action_mask`` of a config, or ``.mode == "simulated_user"``)
  other than in a docstring or error message;
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
SWITCH = re.compile(r"(?:cfg|config|self|env)\.(obs_sam_prob|obs_mask_prior|obs_image_embedding|"
                    r"action_mask\b(?!\()|mode == \"simulated_user\")")


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
                    if getattr(stmt.annotation, "id", "").endswith("Config"):
                        continue  # a section of a composed config, not a setting
                    where[stmt.target.id].append(f"{path}:{node.name}")
    return {k: v for k, v in where.items() if len(v) > 1}


def main() -> int:
    dup = config_fields()
    seg = [str(p) for p in product_files()
           if re.search(r"\b(GeodesicSegmenter|BatchedSAM2Decoder)\(", read(p))
           and '"weightfree"' in read(p)]
    obs = [str(p) for p in product_files()
           if any(SWITCH.search(line) for line in read(p).splitlines()
                  if not line.lstrip().startswith(("#", '"', "f\"", "raise")))]
    big = [f"{p} ({n})" for p in all_files() if (n := len(read(p).splitlines())) > 400]
    print(f"settings declared in more than one config dataclass: {len(dup)}")
    for k, v in sorted(dup.items()):
        print(f"  {k}: {', '.join(v)}")
    print(f"places that construct (choose) a segmenter: {len(seg)}: {', '.join(seg)}")
    print(f"places that decide observation keys: {len(obs)}: {', '.join(obs)}")
    print(f".py files over 400 lines: {len(big)}: {', '.join(big)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
