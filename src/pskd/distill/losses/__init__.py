"""One module per loss. Each holds the loss as plain tensor functions (tested against hand-computed values), the
registered term that configs name (see pskd.distill.terms) and the method built on it (pskd.distill.methods).
The package pskd.distill imports them all."""
