"""Transfer learning: take a pretrained encoder, put a task head on it, adapt it; make it smaller; reuse it.

* :mod:`.datasets` — the tasks' data: SST-2 (sentence-level sentiment), UD English-EWT (part of speech).
* :mod:`.heads` — pooling a sentence ([CLS] through BERT's pooler, or the masked mean) and the
  sequence-classification head on the library's encoder, pinned to HF ``BertForSequenceClassification``.
  The token-classification head is the pretraining unit's
  (:class:`course_lib.pretraining.tagging.EncoderForTokenClassification`, labels on first sub-words).
* :mod:`.finetuning` — fine-tuning and evaluating a classifier; feature extraction (a frozen encoder and a
  trained head); the learning curves over training-set sizes (``scripts/sst2_learning_curves.py``).
* :mod:`.pos_english` — POS tagging on UD English-EWT with the real MiniLM against the same model from
  scratch (``scripts/pos_english.py``).
* :mod:`.distillation` — DistilBERT's recipe: the temperature-softened loss (KL × T²), the hard-label and
  cosine losses, a student built from every other teacher layer; :mod:`.distillation_experiment` — the
  SST-2 experiment's loop, scoring and timing (``scripts/distil_sst2.py``).
* :mod:`.warm_start` — an encoder-decoder assembled from pretrained encoder weights with new
  cross-attention, pinned to HF ``EncoderDecoderModel`` (``scripts/warm_start_multi30k.py``).
* :mod:`.widgets` — the transfer-learning chapter's pictures and explorers.

Built on :mod:`course_lib.pretraining` (the encoder, MiniLM, the tagging head) and
:mod:`course_lib.seq2seq` (decoder layers, BLEU). Not covered: adapters/LoRA, prompting, multi-task training.
"""
from .datasets import SST2_LABELS, load_sst2, load_ud_english_ewt
from .distillation import (
    DISTILBERT_WEIGHTS, distilbert_loss, distillation_loss, hard_label_loss, hidden_cosine_loss, student_from_scratch,
    student_from_teacher,
)
from .finetuning import ClassifierSettings, encode_sentences, evaluate_classifier, fine_tune_classifier, predict_logits
from .heads import EncoderForSequenceClassification, pool, sequence_classification_loss
from .warm_start import BertEncoderDecoder, greedy_generate, warm_start_from_encoder

__all__ = ["SST2_LABELS", "load_sst2", "load_ud_english_ewt", "pool", "distillation_loss",
           "EncoderForSequenceClassification", "sequence_classification_loss", "ClassifierSettings",
           "encode_sentences", "fine_tune_classifier", "evaluate_classifier", "predict_logits",
           "BertEncoderDecoder", "warm_start_from_encoder", "greedy_generate",
           "DISTILBERT_WEIGHTS", "hard_label_loss", "hidden_cosine_loss", "distilbert_loss", "student_from_teacher",
           "student_from_scratch"]
