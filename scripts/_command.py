"""The name a command goes by in its usage line and its error messages.

This folder installs as the package ``sam2click_cli`` and runs from a clone as ``scripts``; a
user types ``sam2click-train``, ``python -m scripts.train`` or ``torchrun -m
sam2click_cli.train``. Messages repeat what they typed, so that they can type it again.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import tyro
from tyro.constructors import ConstructorRegistry, StructConstructorSpec, StructTypeInfo


def command_name(command: str) -> str:
    """``sam2click-<command>`` as a console script (and when called in-process), or
    ``python -m <package>.<command>`` when the module was run with ``-m``."""
    typed = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if typed.startswith("sam2click-"):
        return typed
    if typed == f"{command}.py" and __package__:
        return f"python -m {__package__}.{command}"
    return f"sam2click-{command}"


def fail(command: str, message: str) -> SystemExit:
    """``SystemExit`` whose message starts with the command's name: ``raise fail("train", ...)``."""
    return SystemExit(f"{command_name(command)}: error: {message}")


# ------------------------------------------------------------------------- help as users read it
def plain(text: str) -> str:
    """A docstring as help text: each paragraph one line (the terminal wraps it), RST literals
    (double backticks) as plain words."""
    paragraphs = re.split(r"\n\s*\n", text)
    lines = [" ".join(part.strip() for part in p.splitlines() if part.strip()) for p in paragraphs]
    return re.sub(r"``(.+?)``", r"\1", "\n\n".join(line for line in lines if line))


def plain_help() -> ConstructorRegistry:
    """A tyro registry, entered around ``tyro.cli``, that shows every dataclass field's help as
    ``plain`` text. tyro keeps a docstring's line breaks where a line starts with a non-letter,
    which the source's indentation always does; rules of a registry passed to ``tyro.cli``
    (``ppo.command_options.command_registry``) still apply, and see the plain text."""
    registry = ConstructorRegistry()
    busy: list[type] = []  # the class whose default spec is being built: no recursion into us

    def reflow(helptext: Any) -> Any:
        if callable(helptext):
            return lambda: (lambda text: text and plain(text))(helptext())
        return plain(helptext) if helptext else helptext

    @registry.struct_rule
    def rule(info: StructTypeInfo) -> Any:
        cls = info.type
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or cls in busy:
            return None
        busy.append(cls)
        try:
            spec = ConstructorRegistry.get_struct_spec(info)
        finally:
            busy.pop()
        if not isinstance(spec, StructConstructorSpec):
            return spec
        return dataclasses.replace(spec, fields=tuple(
            dataclasses.replace(f, helptext=reflow(f.helptext)) for f in spec.fields))

    return registry


def cli(command: str, config: Any, argv: list[str] | None, description: str | None,
        **kwargs: Any) -> Any:
    """``tyro.cli`` of a command: flags without section prefixes, plain help, the command's
    name in its usage line and errors."""
    with plain_help():
        return tyro.cli(tyro.conf.OmitArgPrefixes[config], args=argv, prog=command_name(command),
                        description=plain_description(description), **kwargs)


def plain_description(doc: str | None) -> str | None:
    """A module docstring as a command's description: RST literals as plain words."""
    return re.sub(r"``(.+?)``", r"\1", doc) if doc else doc
