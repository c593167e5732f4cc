"""MS-UGCML general object retrieval: a DVC pipeline from images to retrieval metrics."""

__version__ = "0.1.0"
