"""TARS: the PC1 terminal app."""
