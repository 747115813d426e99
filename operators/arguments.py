"""Values from reviewed files on the command lines of external programs: never read as an option.

Every program this platform runs with a value from a spec, a contract, a site file, a connection or a run
parameter (git, ssh, runuser, apptainer, sbatch, ...) gets the value through ``operand`` (a positional
value: refused if it could be an option) after a ``--`` where the program supports one, or inside
``--option=value`` where it does not. The list of such calls, and how each is safe, is in SECURITY.md;
``tests/unit/test_argv_audit.py`` runs each with option-like values.
"""

from __future__ import annotations

from operators.errors import RefusedInput


class UnsafeArgument(RefusedInput):
    """A value that a program would read as an option, or that cannot be passed as an argument."""


def operand(value: object, what: str) -> str:
    """``value`` as a positional argument; refused when it starts with ``-`` or holds NUL or a line break."""
    text = str(value)
    if not text:
        raise UnsafeArgument(f"{what}: empty")
    if text.startswith("-"):
        raise UnsafeArgument(f"{what}: {text!r} starts with '-' and would be read as an option")
    if any(character in text for character in "\0\n\r"):
        raise UnsafeArgument(f"{what}: {text!r} holds a NUL or a line break")
    return text
