"""Encoders, heads, teachers and students. Every network returns (embedding, logits).

The built-in models register themselves (pskd.models.zoo) as a user's plugin does; importing the package imports
them."""

from pskd.models import fusion, inertial, skeleton  # noqa: F401  (built-ins register here)
