"""acd package."""
