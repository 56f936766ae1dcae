"""Lab stage: what the notebooks call (parameters, reproduction, figures, tables, the memory browser)."""
