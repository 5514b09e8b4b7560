"""Masks out to labelling tools, and corrected labels back in.

- ``coco``: COCO object-detection records with compressed RLE masks
  (encoded by ``pycocotools``): the job's ``--coco`` output.
- ``labelstudio``: Label Studio brush-label predictions, the labelling
  config to import with them, and decoding a Label Studio export.
- ``review``: picking the images the model was least sure of.

The conventions both formats share live here: COCO category ids are class
index + 1 (COCO keeps 0 for "no category"), and a Label Studio project
paints the classes other than background with the brush named
:data:`BRUSH_NAME` on the image named :data:`IMAGE_NAME`; pixels painted
with no brush are background.
"""

# Label Studio's control and object tag names (the labelling config's name= attributes).
BRUSH_NAME = "mask"
IMAGE_NAME = "image"
# COCO's category ids start at 1.
COCO_ID_OFFSET = 1


class LabelError(ValueError):
    """A label record that cannot become a class map (a mask whose size is not its
    image's, a label the model has no class for); the message says which and why."""
