"""Explanations for attention captioners (chapters 5–8)."""
