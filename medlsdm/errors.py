"""Exceptions raised by medlsdm.

Every problem with user input is raised as a subclass of :class:`MedLSDMError` whose
message names the file (or parameter) and what is wrong, before any work starts.
"""

from __future__ import annotations


class MedLSDMError(Exception):
    """Base class of every error medlsdm raises on purpose."""


class DataError(MedLSDMError):
    """A data file or folder is missing, corrupt, or does not fit the expectations."""


class ConfigError(MedLSDMError):
    """A parameter, profile or command-line value is not valid."""


class NotebookError(MedLSDMError):
    """A notebook failed while the runner executed it."""


class PackError(MedLSDMError):
    """A run pack (``medlsdm pack``) is unreadable, tampered with, or holds what medlsdm does not load."""
