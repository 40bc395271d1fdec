"""Two fixes to how Typer renders ``--help``, applied once when the app is built.

- Recent Typer versions print a type column for boolean flags (``--overwrite <bool>``), which reads as if the flag
  took a value; a flag's type column is left empty instead.
- Help texts are Rich markup: ``[default: ...]`` written in a help string would be swallowed as a markup tag, so help
  strings that show a bracket write it as ``\\[`` (see ``escape``).
"""

from __future__ import annotations


def escape(text: str) -> str:
    """``text`` with ``[`` escaped for Rich markup, for help strings that show brackets."""
    return text.replace("[", "\\[")


def hide_flag_types() -> None:
    try:
        from typer.core import TyperOption
    except ImportError:  # another Typer layout: nothing to fix
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_pvvae_patched", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._pvvae_patched = True
    TyperOption.display_type_rich = display_type_rich
