"""Images and labels: sources and layouts, downloads, decoding, the phantom, near-duplicates and groups."""
