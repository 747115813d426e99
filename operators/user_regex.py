"""Regular expressions written in reviewed files (a site's ``account.pattern``, a spec's
``serving.smoke.expect_pattern``, a contract's ``pattern`` rules), run with RE2.

Python's ``re`` backtracks: ``(a+)+$`` against forty ``a`` and a ``!`` takes longer than the age of the
universe, and these patterns run in the DAG processor, on the Airflow worker and over every value of a
dataset. RE2 (Google's engine, the ``google-re2`` package) runs in time linear in the text and refuses
the constructs that need backtracking (back-references, look-around) when the pattern is read, so a
pattern either fails ``factory lint`` with RE2's reason or can never hang anything.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from operators.errors import RefusedInput

MAX_PATTERN_CHARS = 1000
MAX_PROGRAM_BYTES = 8 << 20  # RE2's memory budget for one compiled pattern


class PatternError(RefusedInput):
    """A pattern RE2 cannot run: the message says why, without a traceback."""


def _options() -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.max_mem = MAX_PROGRAM_BYTES
    return options


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern; ``PatternError`` names what RE2 does not accept (e.g. ``\\1``, ``(?=``)."""
    import re2

    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) \
            else str(error)
        raise PatternError(f"not a regular expression: {reason} (patterns run with RE2, in linear time: no "
                           "back-references or look-around)") from None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used, in words; None when it can."""
    try:
        compile_pattern(pattern)
    except PatternError as error:
        return str(error)
    return None


def full_match(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).fullmatch(text) is not None


def search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None
