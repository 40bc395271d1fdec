"""The one base class of every error pvvae raises for a user's mistake or a bad file.

The CLI turns any ``PvvaeError`` into a one-line message on stderr and a non-zero exit code; anything else is a
bug and keeps its traceback. Subclasses keep the built-in class they always had (``ValueError`` for bad input,
``RuntimeError`` for failures at run time) so existing ``except ValueError`` code still works.
"""

from __future__ import annotations


class PvvaeError(Exception):
    """Base of pvvae's user-facing errors; the message names the offending file or value and the fix."""
