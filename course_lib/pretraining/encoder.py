"""An encoder-only model in BERT/RoBERTa's layout (to be written: issue 14)."""
