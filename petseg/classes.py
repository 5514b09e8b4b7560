"""The class contract (ARCHITECTURE.md, contract 1) shared by training and serving."""

# Index = Oxford trimap value - 1: trimaps store 1 pet, 2 background, 3 border.
CLASS_NAMES: tuple[str, ...] = ("pet", "background", "border")
NUM_CLASSES = len(CLASS_NAMES)
PET, BACKGROUND, BORDER = 0, 1, 2

# Palette colours of the mask PNGs and overlays, one RGB triple per class.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 80, 40),  # pet: orange-red
    (30, 30, 30),  # background: near black
    (250, 220, 60),  # border: yellow
)


def palette(colours: tuple[tuple[int, int, int], ...] = CLASS_COLOURS) -> list[int]:
    """Returns a 768-entry PIL palette whose first entries are the class colours."""
    flat = [channel for colour in colours for channel in colour]
    return flat + [0] * (768 - len(flat))
