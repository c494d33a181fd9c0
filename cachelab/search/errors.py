"""Errors of ``cachelab search``. Each names the input at fault, its value and what is allowed."""

from __future__ import annotations

from cachelab.errors import CachelabError


class SearchError(CachelabError, ValueError):
    """Bad search input (objectives, bounds, workers, trials) or a search that cannot go on."""


class SearchSpaceError(SearchError):
    """A search space that names unknown parameters, gives a bad range, or is empty."""


class StorageError(SearchError):
    """The Optuna storage URL cannot be opened."""


class StudyMismatchError(SearchError):
    """An existing study was created for another policy, search space, model or objectives."""
