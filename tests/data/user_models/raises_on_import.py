"""A module that fails while it is imported: refused at validation, in one line."""

raise RuntimeError("CUDA driver not found")
