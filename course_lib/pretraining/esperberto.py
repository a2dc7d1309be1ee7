"""EsperBERTo: the course's own small RoBERTa-like Esperanto model (to be written: issue 14)."""
