"""One module per model family, each registering its ExportSpec builder (export/spec.py)."""
