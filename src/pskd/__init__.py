"""pskd: distilling skeleton-trained teachers into an accelerometer-only action recogniser."""

__version__ = "0.1.0"
