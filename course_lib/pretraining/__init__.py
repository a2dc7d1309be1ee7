"""Pretraining: a model learns language from raw text before it is adapted to a task.

* :mod:`.masking` — the two self-supervised objectives' data and losses: dynamic masking for masked
  language modelling (BERT/RoBERTa's 15 % with 80/10/10), the masked-LM loss, the causal-LM shift and loss.
* :mod:`.encoder` — an encoder-only model in BERT/RoBERTa's layout (embeddings, the library's encoder
  layers, a tied masked-LM head, an optional pooler); loads HF's BERT/RoBERTa weights and the real MiniLM.
* :mod:`.encoder_inputs` — the encoder's input checks (errors that name the fix) and RoBERTa's position ids.
* :mod:`.esperberto` — EsperBERTo, the course's own small RoBERTa-like model trained on Esperanto:
  its data split, loading it, fill-mask. Trained by ``scripts/train_esperberto.py``.
* :mod:`.training` — the masked-LM training loop (dynamic masking, AdamW, warm-up and linear decay)
  and the held-out figures (masked-token accuracy, perplexity, the unigram baseline).
* :mod:`.tagging` — part-of-speech tagging on the encoder: the CoNLL-U reader (UD Esperanto), tags on
  first sub-words, the token-classification head.
* :mod:`.tagging_experiment` — does pretraining pay? k-fold cross-validation of a pretrained encoder
  against the same architecture from scratch (``scripts/pos_esperanto.py``).
* :mod:`.widgets` — the pretraining chapter's pictures and explorers: the two objectives side by side,
  dynamic masking on a sentence, fill-mask.

Built from :mod:`course_lib.attention`, :mod:`course_lib.tokenization` and :mod:`course_lib.seq2seq`'s layers.
Not covered: fine-tuning heads beyond what the chapter's experiment needs (the transfer-learning unit).
"""
from .encoder import (
    Encoder, EncoderConfig, EncoderForMaskedLM, EncoderOutput, attention_maps, from_hf, load_minilm,
)
from .esperberto import DEMO_SENTENCES, MaskPrediction, esperanto_corpus, fill_mask, load_esperberto
from .masking import IGNORE_INDEX, causal_lm_loss, choose_positions, corrupt, mask_tokens, mlm_loss, shift_labels
from .tagging import EncoderForTokenClassification, load_ud_esperanto
from .training import MLMFigures, TokenIds, evaluate_mlm, train_mlm, unigram_baseline

__all__ = [
    "EncoderConfig", "Encoder", "EncoderForMaskedLM", "EncoderOutput", "attention_maps", "from_hf", "load_minilm",
    "IGNORE_INDEX", "mask_tokens", "choose_positions", "corrupt", "mlm_loss", "shift_labels", "causal_lm_loss",
    "load_esperberto", "fill_mask", "MaskPrediction", "esperanto_corpus", "DEMO_SENTENCES",
    "train_mlm", "evaluate_mlm", "unigram_baseline", "MLMFigures", "TokenIds",
    "EncoderForTokenClassification", "load_ud_esperanto",
]
