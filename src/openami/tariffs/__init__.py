"""Tariffs: the model, its formats (native, OpenEI URDB) and the pure pricing core."""
