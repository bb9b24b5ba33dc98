"""Knowledge distillation: loss terms, the distiller that holds a student and frozen teachers, methods.

The built-in loss terms and methods register themselves (pskd.distill.terms, pskd.distill.methods) as a user's
plugin does; importing the package imports them."""

from pskd.distill.losses import acs, camkd, contrastive, dkd, feature, fixmatch, kd, relational  # noqa: F401
