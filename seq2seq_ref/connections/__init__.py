"""The connections between encoder and decoder, one module each (interface: seq2seq_ref.components.Connection)."""
