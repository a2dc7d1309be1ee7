"""Masked-LM and causal-LM data and losses (to be written: issue 14)."""
IGNORE_INDEX = -100  # label of a position that gives no loss (torch's cross_entropy default ignore_index)
