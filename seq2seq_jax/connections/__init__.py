"""The connections between encoder and decoder in JAX, one module each (the reference's seq2seq_ref.connections)."""
