"""Models on disk: finding them, telling their family, loading them safely and offline."""
