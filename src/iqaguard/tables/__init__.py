"""Data tables shipped with the package (score ranges, presets, budgets)."""
