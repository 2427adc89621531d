"""Mira: a Flask service with a production runtime."""

__version__ = "0.1.0"
