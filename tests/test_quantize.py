"""--dtype=int8: linear layers in int8 for decoding on a CPU (gptlib/quantize.py). Approximate by
design: the tests bound what it costs in loss and show every way of decoding gives one text."""
import pytest
import torch
from torch import nn

from gptlib.errors import UserError
from gptlib.quantize import Int8Linear, is_quantized, quantize_int8
from model_handler import ModelHandler

SHIPPED = "models/shakespeare_char.pt"


def test_an_int8_layer_is_its_rows_rounded_to_127_steps_of_their_largest_weight():
    torch.manual_seed(0)
    linear = nn.Linear(48, 20)
    quantized = Int8Linear(linear)
    assert quantized.weight_int8.dtype == torch.int8 and quantized.weight_int8.abs().amax(1).eq(127).all()
    rows = quantized.weight_int8.float() * quantized.scale.float()[:, None]
    assert (rows - linear.weight).abs().max() <= linear.weight.abs().amax() / 127  # within one step (and the scale's rounding)
    x = torch.randn(3, 5, 48)
    expected = x @ rows.t() + linear.bias
    assert torch.allclose(quantized(x), expected, rtol=0.02, atol=0.02)  # bfloat16 activations
    one_by_one = torch.cat([quantized(row) for row in x.reshape(15, 1, 48)])  # a row a step, as decoding
    assert torch.allclose(one_by_one, quantized(x).reshape(15, 20), rtol=0.01, atol=0.01)  # a prompt's rows at once


def test_the_shipped_model_in_int8_loses_almost_nothing_on_shakespeare(shakespeare_path):
    exact = ModelHandler(SHIPPED, "cpu").load()
    int8 = ModelHandler(SHIPPED, "cpu").load()
    assert "int8" in int8.use_dtype("int8")
    assert is_quantized(int8.model) and not is_quantized(exact.model)
    text = shakespeare_path.read_text(encoding="utf-8")[-20_000:]
    ids = torch.tensor(exact.vocab.encode(text))
    block = exact.model.config.block_size
    x = torch.stack([ids[i:i + block] for i in range(0, 8 * block * 4, block * 4)])
    y = torch.stack([ids[i + 1:i + block + 1] for i in range(0, 8 * block * 4, block * 4)])
    with torch.no_grad():
        loss_exact, loss_int8 = exact.model(x, y)[1].item(), int8.model(x, y)[1].item()
    assert abs(loss_int8 - loss_exact) < 0.02, (loss_exact, loss_int8)


def test_every_way_of_decoding_an_int8_model_gives_one_text():
    from gptlib.engine import TokenStream, decoder_for
    handler = ModelHandler(SHIPPED, "cpu").load()
    handler.use_dtype("int8")
    prompt = handler.vocab.encode("ROMEO:")
    with torch.no_grad():
        generated = handler.model.generate(torch.tensor([prompt]), 60, temperature=0)[0, len(prompt):].tolist()
    assert list(TokenStream(decoder_for(handler.model), prompt, 60, temperature=0)) == generated
    assert handler.generate("ROMEO:", 60, temperature=0)[0] == "ROMEO:" + handler.vocab.decode(generated)


def test_int8_is_refused_where_it_cannot_be_used_and_never_saved(tmp_path):
    handler = ModelHandler(SHIPPED, "cpu").load()
    with pytest.raises(UserError, match="on a CPU"):
        quantize_int8(handler.model, "cuda")
    handler.use_dtype("int8")
    with pytest.raises(UserError, match="load the checkpoint again"):
        handler.save(str(tmp_path / "q.pt"))
    assert not (tmp_path / "q.pt").exists()


@pytest.mark.slow  # one compile of the shipped model's step
def test_the_compiled_int8_step_gives_the_eager_steps_logits_within_its_rounding():
    """serve.py --dtype=int8 --compile=true: inductor may multiply the int8 rows with its own kernel,
    which rounds otherwise than torch's, so the logits agree closely, not bit for bit."""
    from gptlib.engine import DecodeStep, compiled_step
    from gptlib.kv_ring import ring_slots
    handler = ModelHandler(SHIPPED, "cpu").load()
    handler.use_dtype("int8")
    model, config = handler.model, handler.model.config
    compiled, eager = compiled_step(model), DecodeStep(model)
    ids = handler.vocab.encode("ROMEO:\nBut soft, what light")
    shape = (config.n_layer, 1, config.kv_heads, ring_slots(len(ids), config), config.head_size)
    keys, values = torch.zeros(shape), torch.zeros(shape)
    with torch.no_grad():
        for position, token in enumerate(ids):
            tokens, positions = torch.tensor([token]), torch.tensor([position])
            logits, new_keys, new_values = compiled(tokens, positions, keys, values)
            expected = eager(tokens, positions, keys.clone(), values.clone())[0]
            keys[:, :, :, position:position + 1], values[:, :, :, position:position + 1] = new_keys, new_values
            assert (logits - expected).abs().max() < 0.05 * expected.abs().max(), position
