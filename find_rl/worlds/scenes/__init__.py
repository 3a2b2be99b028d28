"""The compositional "scenes" world: coloured shapes, counts and relations on a 32x32 black canvas (see README.md)."""
