"""seqlife: the pure core of the sequencing-data lifecycle (no framework, store or database imports)."""

__version__ = "0.1.0"
