"""recordio-pack: pack image folders into MXNet RecordIO shards, verify them, and ship them on AWS."""

__version__ = "0.1.0"
__all__ = ["__version__"]
