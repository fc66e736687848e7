"""Files: atomic writes and the integer-only model file."""
