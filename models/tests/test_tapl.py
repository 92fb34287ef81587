"""TAPL prompt construction, initialisation and meta-net export."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from semclip_models import bundle, tapl
from semclip_models.text_tower import MiniLMText
from semclip_models.train_tapl import export_tapl

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def text():
    return MiniLMText()


def test_prompt_text():
    assert tapl.prompt_text("cat") == "X X X X cat."


def test_prompt_tokens_have_placeholders_at_context_positions(text):
    prompts = tapl.PromptTokens(text, ["cat", "automobile", "aeroplane wing"])
    ids = prompts.ids
    x_id = text.tokenizer.encode("X", add_special_tokens=False).ids[0]
    assert (ids[:, 1:5] == x_id).all()
    cls_id = text.tokenizer.token_to_id("[CLS]")
    assert (ids[:, 0] == cls_id).all()
    # Padded to the longest prompt in the batch; the mask marks the padding.
    lengths = prompts.mask.sum(1)
    assert int(lengths.max()) == ids.shape[1]
    assert int(lengths.min()) < ids.shape[1]


def test_context_replaces_positions_1_to_4(text):
    model = tapl.Tapl(text, 384, 50.0)
    prompts = tapl.PromptTokens(text, ["dog", "ship"])
    z_hat = torch.nn.functional.normalize(torch.randn(3, 384), dim=-1)
    bias = torch.randn(3, 384)
    embeds, mask = model.prompt_embeddings(z_hat, prompts, bias)
    assert embeds.shape[:2] == (6, prompts.ids.shape[1])
    table = text.token_embedding
    for n in range(3):
        for c in range(2):
            row = embeds[n * 2 + c]
            assert torch.allclose(row[1:5], model.context + bias[n])
            assert torch.equal(row[0], table[prompts.ids[c, 0]])
            assert torch.equal(row[5:], table[prompts.ids[c, 5:]])


def test_untrained_tapl_equals_the_plain_template(text):
    model = tapl.Tapl(text, 384, 50.0)
    labels = ["bird", "horse", "truck"]
    z_hat = torch.nn.functional.normalize(torch.randn(2, 384), dim=-1)
    feats = model.class_features(z_hat, tapl.PromptTokens(text, labels))
    ref = text.encode_texts([f"a photo of a {c}." for c in labels])
    assert torch.allclose(feats[0], ref, atol=1e-5)
    assert torch.allclose(feats[1], ref, atol=1e-5)


def test_meta_net_shape_and_export(text, tmp_path):
    model = tapl.Tapl(text, 384, 50.0)
    torch.nn.init.normal_(model.meta_net.fc2.weight, std=0.1)
    assert model.meta_net.fc1.out_features == 24
    diff = export_tapl(model, tmp_path)
    assert diff <= 1e-4
    sess = ort.InferenceSession(str(tmp_path / "tapl_meta_net.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["z_hat"]
    assert [o.name for o in sess.get_outputs()] == ["ctx_bias"]
    out = sess.run(None, {"z_hat": np.zeros((4, 384), np.float32)})[0]
    assert out.shape == (4, 384)
    ctx = bundle.read_f32(tmp_path / "tapl_context.f32", (4, 384))
    assert np.array_equal(ctx, model.context.detach().numpy())


def test_temperature_head_starts_at_the_logit_scale_and_learns_per_image():
    from semclip_models.train_tapl import TemperatureHead

    head = TemperatureHead(16, 40.0)
    z = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    assert torch.allclose(head(z), torch.full((6, 1), 40.0))
    # Two kinds of input, one wanting confident scores, one wanting flat ones.
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    sharp, flat = z[:3], torch.zeros(3, 16)
    for _ in range(100):
        loss = (head(sharp) - 70.0).pow(2).mean() + (head(flat) - 5.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(head(sharp).min()) > 60.0 and float(head(flat).max()) < 15.0
