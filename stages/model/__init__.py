"""The embedding model: a backbone with one head per scale group, its EMA teacher, and its file.

* :mod:`stages.model.networks`: :class:`StudentModel`, :class:`TeacherModel`, :func:`build_student`;
* :mod:`stages.model.files`: ``model.pt`` (weights + the metadata that rebuilds the network).

The train stage writes the file, the index stage and ``search`` read it.
"""

from stages.model.files import backbone_meta, load_model, pretrained_model, save_model
from stages.model.networks import EmbeddingHead, StudentModel, TeacherModel, build_student

__all__ = [
    "EmbeddingHead",
    "StudentModel",
    "TeacherModel",
    "backbone_meta",
    "build_student",
    "load_model",
    "pretrained_model",
    "save_model",
]
