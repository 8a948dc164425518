"""X/Y/Z plots (AUTOMATIC1111's script): a grid of images varying up to three settings.

:mod:`~sdstudio.engine.xyz.axes` reads the axes, :mod:`~sdstudio.engine.xyz.plan`
turns them into one request per cell, and :mod:`~sdstudio.engine.xyz.grid` draws the
finished images into one labelled grid. Nothing here imports torch or Qt.
"""
