"""The class contract (ARCHITECTURE.md, contract 1) shared by training and serving.

The classes' colours live with the drawing code, in :mod:`petseg.drawing`.
"""

# Index = Oxford trimap value - 1: trimaps store 1 pet, 2 background, 3 border.
CLASS_NAMES: tuple[str, ...] = ("pet", "background", "border")
NUM_CLASSES = len(CLASS_NAMES)
PET, BACKGROUND, BORDER = 0, 1, 2
# Stored value -> class of a paired mask folder by default: binary masks, 255 pet, 0 background.
DEFAULT_MASK_VALUES = "0:1,255:0"
