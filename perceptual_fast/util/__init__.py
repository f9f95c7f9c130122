"""Small helpers with no model code: atomic file writes, progress lines, plain-text tables, image files."""
