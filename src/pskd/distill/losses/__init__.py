"""One module per loss. Each holds the loss as plain tensor functions (tested against hand-computed values) and
the registered term that configs name (see pskd.distill.terms). Importing this package registers them all."""

from pskd.distill.losses import acs, camkd, contrastive, dkd, feature, fixmatch, kd, relational  # noqa: F401
