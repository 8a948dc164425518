"""A1111's "Pixel Perfect": the preprocessor works at the size the control image takes in
the generated picture, so the map is made at the resolution it is used at (neither
upscaled blurry nor downscaled thin) whatever the unit's "Processor Res" says.

The rule is the ControlNet extension's ``pixel_perfect_resolution``: the image is
scaled by the factor that fits it to the generation's size, by the larger of the two
factors (its width's and its height's) for "Crop and Resize" and "Just Resize" and the
smaller for "Resize and Fill"; its short side times that factor, rounded half to even,
is the processor resolution.
"""

from __future__ import annotations

from sdstudio.engine.control.units import ControlResize


def pixel_perfect_resolution(
    image_size: tuple[int, int], target_size: tuple[int, int], resize: ControlResize
) -> int:
    """The processor resolution for an image of ``image_size`` (width, height) fitted to
    a generation of ``target_size`` (width, height) with ``resize``."""
    width, height = image_size
    target_width, target_height = target_size
    by_height = target_height / height
    by_width = target_width / width
    choose = min if resize is ControlResize.FILL else max
    # Python's round() rounds half to even, as numpy's round in the extension does.
    return max(1, round(choose(by_height, by_width) * min(width, height)))
