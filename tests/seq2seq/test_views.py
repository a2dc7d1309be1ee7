"""bertviz's encoder-decoder views of our trained Transformer render offline: encoder, decoder and cross-attention.

The browser test uses Debian's chromium through playwright, as tests/viz/test_bertviz_offline.py does.
"""
from __future__ import annotations

import json
import re

import pytest

from course_lib.seq2seq.alignment import translation_attention
from course_lib.seq2seq.translation import load_translation_model
from course_lib.viz.bertviz_offline import head_view, model_view

SENTENCE = "Ein Typ arbeitet an einem Gebäude."  # from Multi30k test2016; 8 source tokens, 9 decoder tokens




@pytest.fixture(scope="module")
def model():
    return load_translation_model("transformer")


@pytest.fixture(scope="module")
def recorded(model):
    return translation_attention(model, SENTENCE)


def views(recorded):
    tokens = {"encoder_tokens": recorded.source_tokens, "decoder_tokens": recorded.decoder_tokens}
    return {
        "model_view": model_view(None, None, **recorded.maps, **tokens).data,  # all three kinds, one filter menu
        "head_view": head_view(None, None, cross_attention=recorded.maps["cross_attention"], **tokens).data,
    }


def test_views_embed_the_local_libraries_and_no_cdn(bertviz_assets, recorded):
    assert len(recorded.source_tokens) != len(recorded.decoder_tokens)  # so a swapped axis would show
    for name, html in views(recorded).items():
        assert re.findall(r"<script[^>]*\bsrc\s*=", html, flags=re.IGNORECASE) == [], name
        assert "cdnjs" not in html and "require.config" not in html, name
        assert "d3js.org v5.16.0" in html and "jQuery v3.7.1" in html, name
        assert json.dumps(recorded.decoder_tokens)[1:-1] in html and json.dumps(recorded.source_tokens)[1:-1] in html
    assert all(f'">{kind}</option>' in views(recorded)["model_view"] for kind in ("Encoder", "Decoder", "Cross"))


@pytest.mark.slow  # starts chromium: a few seconds
def test_encoder_decoder_model_view_draws_every_kind_offline(bertviz_assets, offline_page, model, recorded, tmp_path,
                                                             artifacts_dir):
    page = offline_page
    page.blocked.clear()
    page.errors.clear()
    path = tmp_path / "model_view.html"
    path.write_text(f"<!doctype html><html><body>{views(recorded)['model_view']}</body></html>", encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_timeout(300)
    S, T = len(recorded.source_tokens), len(recorded.decoder_tokens)
    heads, layers = model.config["num_heads"], model.config["num_decoder_layers"]
    # model_view draws one thumbnail per (layer, head), one line per (query, key) pair in each
    for option, queries, keys in (("0", S, S), ("1", T, T), ("2", T, S)):  # Encoder, Decoder, Cross
        page.locator("select#filter").select_option(option)
        page.wait_for_timeout(200)
        assert page.locator("svg line").count() == layers * heads * queries * keys, option
    page.screenshot(path=str(artifacts_dir / "bertviz_seq2seq_model_view_offline.png"), full_page=True)
    assert page.errors == [], page.errors
    assert page.blocked == [], f"the view tried to reach {page.blocked}"
