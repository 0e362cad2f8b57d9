"""The package version: one place, read by pyproject (setuptools dynamic) and the image tags."""

__version__ = "0.3.0"
