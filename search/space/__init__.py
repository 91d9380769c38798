"""The search-space file: YAML in, a validated frozen ``Space`` out.

Imports neither Ray nor Optuna: a space is checked, and its files read,
without starting anything.
"""

from search.space.loader import Space, load_space
from search.space.params import Param, walk

__all__ = ["Param", "Space", "load_space", "walk"]
