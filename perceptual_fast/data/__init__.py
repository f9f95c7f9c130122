"""Data: synthetic triplets (more readers arrive with BAPPS)."""
