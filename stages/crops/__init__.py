"""Crops of objects: reading images, cutting box crops, their byte encoding, and network input.

* :mod:`stages.crops.images`: RGB ``uint8`` images (photo folders EXIF-oriented) and crops, PNG/JPEG
  bytes (no torch);
* :mod:`stages.crops.tensors`: decoded crops as ``[N, 3, S, S]`` uint8 tensors (torch).

Every stage that touches pixels (extract encodes, train/index/search/evaluate decode) goes
through these two modules, so a change of crop geometry or codec reruns all of them.
"""

from stages.crops.images import (
    crop_boxes,
    decode_crop,
    encode_crop,
    image_reader,
    read_image,
    read_photo,
    to_rgb_uint8,
)

__all__ = ["crop_boxes", "decode_crop", "encode_crop", "image_reader", "read_image", "read_photo", "to_rgb_uint8"]
