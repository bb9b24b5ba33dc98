"""pskd's version, recorded in every run and output marker."""

__version__ = "0.1.0"
