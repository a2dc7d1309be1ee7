"""POS tagging on the encoder: the CoNLL-U reader on the real treebanks, labels on first sub-words only,
the head pinned to HF's token-classification models, and the cross-validation's pieces."""
from __future__ import annotations

import pytest
import torch

from course_lib.pretraining.encoder import EncoderConfig, EncoderForMaskedLM
from course_lib.pretraining.masking import IGNORE_INDEX
from course_lib.pretraining.tagging import (
    UPOS_TAGS, EncoderForTokenClassification, TaggedSentence, align_labels, encode_sentence, load_ud_esperanto,
    read_conllu, token_classification_loss,
)
from course_lib.pretraining.tagging_experiment import (
    FineTuneSettings, collate, evaluate, fine_tune, kfold, majority_baseline, ngram_overlap,
)

BOS, PAD, EOS = 0, 1, 2
CHARS = lambda text: [ord(c) for c in text]  # noqa: E731  a "tokenizer" whose sub-words are characters


def sentence(words, spaces=None, tags=None):
    spaces = spaces or [False] + [True] * (len(words) - 1)
    tags = tags or ["NOUN"] * len(words)
    text = "".join((" " if s else "") + w for w, s in zip(words, spaces))
    return TaggedSentence("t", text, tuple(words), tuple(tags), tuple(spaces))


# --- the reader ------------------------------------------------------------------------------------------

def test_reader_on_the_real_treebanks():
    sentences = load_ud_esperanto()
    cairo = [s for s in sentences if not s.sent_id.startswith(("prago", "DpH"))]
    assert (len(sentences), len(cairo)) == (151, 20)
    assert sum(len(s.words) for s in sentences) == 3342 and sum(len(s.words) for s in cairo) == 177
    assert all(len(s.words) == len(s.tags) == len(s.space_before) for s in sentences)
    first = sentences[0]
    assert first.words[:3] == ("La", "knabino", "skribis") and first.tags[:3] == ("DET", "NOUN", "VERB")
    # the spaces are right: words and their spaces give back every sentence's "# text" exactly
    rebuilt = ["".join((" " if s else "") + w for w, s in zip(x.words, x.space_before)) for x in sentences]
    assert rebuilt == [s.text for s in sentences]


CONLLU = """# sent_id = a
# text = Al la domo.
1-2\tAl la\t_\t_\t_\t_\t_\t_\t_\t_
1\tAl\tal\tADP\t_\t_\t3\tcase\t_\t_
2\tla\tla\tDET\t_\t_\t3\tdet\t_\t_
3\tdomo\tdomo\tNOUN\t_\t_\t0\troot\t_\tSpaceAfter=No
3.1\tiri\tiri\tVERB\t_\t_\t_\t_\t_\t_
4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

"""


def test_reader_skips_ranges_and_empty_nodes_and_reads_spaces():
    [s] = read_conllu(CONLLU)
    assert s.words == ("Al", "la", "domo", ".") and s.tags == ("ADP", "DET", "NOUN", "PUNCT")
    assert s.space_before == (False, True, True, False)


def test_reader_errors_name_the_line():
    with pytest.raises(ValueError, match="has a line with 3 columns, CoNLL-U has 10"):
        read_conllu("1\tla\tla\n", "x.conllu")
    with pytest.raises(ValueError, match="'NOM' is not a UPOS tag"):
        read_conllu(CONLLU.replace("NOUN", "NOM"))


# --- labels on sub-words -----------------------------------------------------------------------------------

def test_the_tag_goes_on_the_first_sub_word_only():
    ids, labels = align_labels([[10, 11, 12], [13], [14, 15]], [5, 6, 7], BOS, EOS)
    assert ids == [BOS, 10, 11, 12, 13, 14, 15, EOS]
    assert labels == [IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX, 6, 7, IGNORE_INDEX, IGNORE_INDEX]
    with pytest.raises(ValueError, match="3 words but 2 tags"):
        align_labels([[1], [2], [3]], [0, 1], BOS, EOS)
    with pytest.raises(ValueError, match="encoded to no token"):
        align_labels([[1], []], [0, 1], BOS, EOS)


def test_words_are_encoded_with_the_space_before_them():
    s = sentence(["La", "kato", "."], spaces=[False, True, False], tags=["DET", "NOUN", "PUNCT"])
    [(ids, labels)] = encode_sentence(s, CHARS, BOS, EOS, max_length=20)
    assert ids == [BOS, *CHARS("La kato."), EOS]
    tag = {t: i for i, t in enumerate(UPOS_TAGS)}
    # "La" → L; " kato" → the space (its first sub-word); "." → .
    assert [(chr(i), label) for i, label in zip(ids, labels) if label != IGNORE_INDEX] == [
        ("L", tag["DET"]), (" ", tag["NOUN"]), (".", tag["PUNCT"])]


def test_long_sentences_are_cut_between_words_and_every_word_is_scored_once():
    s = sentence(["abc", "de", "fghi", "j", "klm"])  # pieces: abc, " de", " fghi", " j", " klm"
    pieces = encode_sentence(s, CHARS, BOS, EOS, max_length=2 + 7)  # 7 sub-words fit per piece
    assert [ids[1:-1] for ids, _ in pieces] == [CHARS("abc de"), CHARS(" fghi j"), CHARS(" klm")]
    assert sum(label != IGNORE_INDEX for _, labels in pieces for label in labels) == 5
    assert all(len(ids) <= 9 and ids[0] == BOS and ids[-1] == EOS for ids, _ in pieces)
    with pytest.raises(ValueError, match="one word is 6 tokens, more than the 4 that fit"):
        encode_sentence(sentence(["a", "bcdef"]), CHARS, BOS, EOS, max_length=6)


def test_real_bpe_first_sub_words_start_the_words():
    from course_lib.data import read_text
    from course_lib.tokenization import train_bpe

    bpe = train_bpe(read_text("esperanto/fundamento_ekzercaro.txt").splitlines()[:400], vocab_size=600,
                    special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    s = load_ud_esperanto()[1]  # "Mi pensas, ke pluvas."
    [(ids, labels)] = encode_sentence(s, bpe.encode, BOS, EOS, max_length=128)
    assert bpe.decode(ids[1:-1]) == s.text
    starts = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    ends = starts[1:] + [len(ids) - 1]
    assert [bpe.decode(ids[a:b]).strip() for a, b in zip(starts, ends)] == list(s.words)


# --- the head -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_loss_and_logits_equal_hf_token_classification(kind):
    transformers = pytest.importorskip("transformers")
    sizes = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
                 num_labels=len(UPOS_TAGS), attn_implementation="eager")
    torch.manual_seed(12)
    if kind == "bert":
        hf = transformers.BertForTokenClassification(transformers.BertConfig(**sizes, pad_token_id=0))
    else:
        hf = transformers.RobertaForTokenClassification(transformers.RobertaConfig(
            **sizes, pad_token_id=1, max_position_embeddings=40, type_vocab_size=1))
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    hf.eval()
    ours = EncoderForTokenClassification.from_hf(hf).eval()
    pad = hf.config.pad_token_id
    examples = [([BOS if kind == "roberta" else 2, 10, 11, 12, 13, EOS], [-100, 3, -100, 7, 12, -100]),
                ([BOS if kind == "roberta" else 2, 20, 21, EOS], [-100, 0, 16, -100])]
    ids, mask, labels = collate(examples, pad)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
        logits = ours(ids, mask)
    real = mask.bool()
    assert (logits[real] - theirs.logits[real]).abs().max() < 1e-5
    assert abs(token_classification_loss(logits, labels) - theirs.loss) < 1e-6


def test_loss_counts_labelled_positions_only():
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, 4], [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    picked = [(0, 1, 1), (0, 3, 4), (1, 0, 2)]
    expected = -torch.stack([logits[b, t].log_softmax(-1)[y] for b, t, y in picked]).mean()
    assert torch.allclose(token_classification_loss(logits, labels), expected)
    with pytest.raises(ValueError, match="must share"):
        token_classification_loss(logits, labels[:, :3])


def small_config(**changes):
    return EncoderConfig(**{**dict(vocab_size=128, dim=16, num_layers=1, num_heads=2, ffn_dim=32, max_positions=40,
                                   type_vocab_size=1, pad_token_id=PAD, padding_offset_positions=True), **changes})


def test_from_encoder_copies_the_pretrained_weights_and_shares_none():
    mlm = EncoderForMaskedLM(small_config())
    tagger = EncoderForTokenClassification.from_encoder(mlm.encoder)
    for (name, mine), theirs in zip(tagger.encoder.state_dict().items(), mlm.encoder.state_dict().values()):
        assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr(), name
    assert tagger.classifier.out_features == len(UPOS_TAGS)


# --- the experiment's pieces -------------------------------------------------------------------------------

def test_kfold_partitions_the_sentences():
    folds = kfold(151, 5, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(151)) and [len(f) for f in folds] == [31, 30, 30, 30, 30]
    assert folds == kfold(151, 5, seed=0) and folds != kfold(151, 5, seed=1)
    with pytest.raises(ValueError, match="folds"):
        kfold(3, 5, 0)


def test_majority_baseline():
    train = [sentence(["la", "kato", "la"], tags=["DET", "NOUN", "DET"]), sentence(["La", "kato"], tags=["DET", "VERB"])]
    test = [sentence(["la", "kato", "hundo"], tags=["DET", "NOUN", "NOUN"])]
    # la → DET (right), kato → NOUN (first of a 1-1 tie, right), hundo unseen → DET, the commonest (wrong)
    assert majority_baseline(train, test) == (2, 3)


def test_fine_tune_is_repeatable_and_learns_and_evaluate_counts_words():
    examples = [([BOS, 5 + i % 7, 20 + i % 5, EOS], [IGNORE_INDEX, i % 7, IGNORE_INDEX, IGNORE_INDEX])
                for i in range(24)]
    settings = FineTuneSettings(steps=60, batch_size=8, lr=1e-2)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = EncoderForTokenClassification(small_config(dropout=0.0))
        runs.append(fine_tune(model, examples, settings, seed=0, pad_id=PAD))
    assert runs[0] == runs[1] and runs[0][-1] < 0.1 * runs[0][0]
    assert evaluate(model, examples, PAD) == (24, 24)  # one scored word per example, all learnt


def test_ngram_overlap():
    corpus = "Antaŭ longe vivis reĝo. Li havis tri filojn, kaj ĉiuj estis bonaj."
    found = sentence(["li", "havis", "tri", "filojn"])
    shared = sentence(["Ŝi", "havis", "tri", "filojn", "kaj", "ĉiuj"])
    neither = sentence(["La", "hundo", "dormas"])
    result = ngram_overlap([found, shared._replace(sent_id="s"), neither._replace(sent_id="n")], corpus, n=4)
    assert result["found_whole"] == ["t"] and result["sharing_an_ngram"] == ["t", "s"]


def test_an_epoch_uses_every_example_once_in_batches_of_similar_length():
    from course_lib.pretraining.training import length_bucketed_batches

    lengths = [int(x) for x in torch.randint(3, 120, (157,), generator=torch.Generator().manual_seed(0))]
    batches = length_bucketed_batches(lengths, 16, torch.Generator().manual_seed(1))
    assert sorted(i for b in batches for i in b) == list(range(157)) and max(map(len, batches)) == 16
    assert batches == length_bucketed_batches(lengths, 16, torch.Generator().manual_seed(1))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = torch.randperm(157, generator=torch.Generator().manual_seed(1)).tolist()
    padded_plain = sum(16 * max(lengths[i] for i in plain[s:s + 16]) for s in range(0, 157, 16))
    assert padded < 0.8 * padded_plain  # grouping by length pads less


def test_paired_difference_matches_runs_by_fold_and_seed():
    from course_lib.pretraining.tagging_experiment import paired_difference

    runs = [dict(model=m, fold=f, seed=s, accuracy=a) for m, f, s, a in [
        ("a", 0, 0, 0.8), ("b", 0, 0, 0.7), ("a", 0, 1, 0.6), ("b", 0, 1, 0.6),
        ("b", 1, 0, 0.9), ("a", 1, 0, 0.5)]]  # listed out of order on purpose
    result = paired_difference(runs, "a", "b")
    assert result["differences"] == pytest.approx([0.1, 0.0, -0.4])
    assert (result["wins"], result["ties"], result["losses"]) == (1, 1, 1)
    assert result["mean"] == pytest.approx(-0.1)
