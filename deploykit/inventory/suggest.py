"""'Did you mean ...?' for misspelt keys, roles, sites and levels."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'db'?)' when a choice is close to `word`, else ' (expected one of: a, b, c)'."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if not options:
        return ""
    if len(options) <= 12:
        return f" (expected one of: {', '.join(options)})"
    return ""
