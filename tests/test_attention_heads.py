"""Every block's and head's attention weights (seq2seq_ref.model.attention(heads=True) and its JAX twin
seq2seq_jax.attention): [B, L, H, T, S], equal between the backends in float64 (<= 1e-12), and what decoding
reports (the last block's mean over heads) is their mean."""
import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import seq2seq_jax  # noqa: E402
from seq2seq_ref.model import attention, attention_layout  # noqa: E402
from seq2seq_ref.registry import CONNECTIONS, DECODERS  # noqa: E402
from tests.helpers import config_with_heads, float64_params, ragged_batch  # noqa: E402


def variants():
    """Each decoder family with each connection it takes, and input feeding (the recurrent decoder's step path)
    where it fits: what the weights come from.  One encoder: the encoders only make the keys."""
    for decoder in ("lstm", "transformer"):
        for connection in CONNECTIONS:
            if DECODERS[decoder].accepts(CONNECTIONS[connection]) and (decoder, connection) != ("lstm", "none"):
                yield "gru", decoder, connection, 2, True, False
                if DECODERS[decoder].uses_connection and not CONNECTIONS[connection].feeds_input \
                        and CONNECTIONS[connection].uses_heads:
                    yield "gru", decoder, connection, 2, True, True
    yield "gru", "lstm", "none", 1, False, False


@pytest.mark.parametrize("encoder, decoder, connection, layers, bidirectional, feeding", list(variants()))
def test_every_heads_weights_agree_between_backends(encoder, decoder, connection, layers, bidirectional, feeding):
    extra = dict(input_feeding=True) if feeding else {}
    config = config_with_heads(heads=3, src_vocab_size=9, tgt_vocab_size=11, embed_dim=6, hidden_dim=6,
                               num_layers=layers, bidirectional=bidirectional, attention=connection,
                               encoder=encoder, decoder=decoder, **extra)
    params = float64_params(config, seed=layers)
    batch = ragged_batch(config, np.random.default_rng(7), batch_size=3, src_len=6, tgt_len=5)
    mean = attention(params, config, batch)
    heads = attention(params, config, batch, heads=True)
    if attention_layout(config) is None:
        assert mean is None and heads is None and connection == "none"
        return
    B, T, S = mean.shape
    assert heads.shape == (B, *attention_layout(config), T, S)
    assert heads.shape[1:3] == ((layers, 3) if decoder == "transformer" else (1, 3) if connection == "multihead"
                                else (1, 1))
    np.testing.assert_allclose(heads[:, -1].mean(axis=1), mean, rtol=0, atol=1e-15)
    real_source = np.arange(S)[None, :] < batch.src_lengths[:, None]
    assert np.all(heads[~np.broadcast_to(real_source[:, None, None, None, :], heads.shape)] == 0)
    np.testing.assert_allclose(heads.sum(axis=-1), 1.0, atol=1e-12)

    jax_heads = seq2seq_jax.attention(params, config, batch, heads=True)  # its mean path: decoding's, tested there
    assert jax_heads.dtype == np.float64
    np.testing.assert_allclose(np.asarray(jax_heads), heads, rtol=0, atol=1e-12)
