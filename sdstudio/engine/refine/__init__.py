"""Bigger and sharper images after (or instead of) a generation's first pass.

- ``hires`` and ``hires_settings``: A1111's hires fix, a second pass at a larger size.
- ``refiner`` and ``refiner_settings``: a second model that finishes the denoising.
- ``detailer``, ``detailer_settings`` and ``face_detection``: faces found and repainted.
- ``upscalers``, ``upscaler_files`` and ``upscale_tiles``: upscaler files (spandrel)
  and the built-in resizes, run in blended tiles.
- ``upscale_job`` and ``upscale_settings``: an image upscaled alone; ``sd_upscale``:
  an upscaled image repainted tile by tile.
"""
