"""Model configuration, shared by the NumPy reference and the JAX twin."""
from __future__ import annotations

from dataclasses import dataclass

from .registry import CONNECTIONS, DECODERS, ENCODERS

# the built-in names (a config is checked against the registries as they are when it is made)
CELL_TYPES = tuple(ENCODERS)
ATTENTION_TYPES = tuple(CONNECTIONS)
OUTPUT_FROM = ("state", "state+context+input")
TIE_EMBEDDINGS = ("none", "target", "all")


def _require_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and choices of the encoder-decoder; see MATH.md for the symbols.

    src_vocab_size, tgt_vocab_size: V_src, V_tgt, including the special tokens.
    embed_dim: E.  hidden_dim: H (also the attention dimension A of Bahdanau).
    num_layers: L, stacked recurrent layers (or Transformer blocks) on each side.
    bidirectional: encoder reads both directions; keys then have K = 2H features.
    attention: the connection (registry.CONNECTIONS): "none" (Sutskever 2014), "bahdanau" (additive,
        2015), "luong" (general, 2015), "multihead" (scaled dot-product, num_heads heads, Vaswani 2017).
    dropout: inverted-dropout rate on embeddings, between layers and before the
        output projection; > 0 needs an explicit seed at training time.
    label_smoothing: epsilon of the smoothed cross-entropy (0 = plain).
    pad_id, bos_id, eos_id: special token ids, the same in both vocabularies.
    encoder, decoder: the stack of each side (registry.ENCODERS, registry.DECODERS): "lstm", "gru" or
        "transformer", chosen independently (a Transformer decoder needs a connection with heads,
        attention="multihead", whose heads its blocks' cross-attention shares).
    num_heads: heads of multi-head attention and of a Transformer side (must divide hidden_dim); 1 where
        neither the connection nor a stack has heads.
    output_from: what the output layer reads when the connection feeds the decoder input (Bahdanau):
        "state" (f_t = s_t) or "state+context+input" (the paper's deep output, f_t = [s_t; ctx_t; y_t]).
    input_feeding: for a connection that reads the decoder output (Luong et al. 2015): the previous
        attentional state joins the next decoder input, x_t = [y_t; f_{t-1}], f_0 = 0.
    ffn_dim: inner width of a Transformer block's feed-forward network; None means 4 * hidden_dim.
    max_positions: the longest source a Transformer side accepts (its sinusoidal positions (T1) need no
        table; the bound is checked with the batch).
    tie_embeddings: (W1) "none"; "target": the output projection is the target embedding transposed,
        W_out = E_tgt^T (Press & Wolf 2017; needs output_dim == embed_dim); "all": one matrix embed/W is
        the source and target embedding and the output projection (Vaswani et al. 2017, §3.4; also needs
        one vocabulary for both sides, so src_vocab_size == tgt_vocab_size).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int
    hidden_dim: int
    num_layers: int = 1
    bidirectional: bool = False
    attention: str = "bahdanau"
    dropout: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    label_smoothing: float = 0.0
    encoder: str = "lstm"
    decoder: str = "lstm"
    num_heads: int = 1
    output_from: str = "state"
    input_feeding: bool = False
    ffn_dim: int | None = None
    max_positions: int = 512
    tie_embeddings: str = "none"

    def __post_init__(self) -> None:
        _require_int("src_vocab_size", self.src_vocab_size, 3)
        _require_int("tgt_vocab_size", self.tgt_vocab_size, 3)
        _require_int("embed_dim", self.embed_dim, 1)
        _require_int("hidden_dim", self.hidden_dim, 1)
        _require_int("num_layers", self.num_layers, 1)
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"bidirectional: expected a bool, got {self.bidirectional!r}")
        if self.attention not in CONNECTIONS:
            raise ValueError(f"attention: expected one of {tuple(CONNECTIONS)}, got {self.attention!r}")
        _require_int("num_heads", self.num_heads, 1)
        if self.ffn_dim is not None:
            _require_int("ffn_dim", self.ffn_dim, 1)
        _require_int("max_positions", self.max_positions, 1)
        for side, stacks in (("encoder", ENCODERS), ("decoder", DECODERS)):
            if getattr(self, side) not in stacks:
                raise ValueError(f"{side}: expected one of {tuple(stacks)}, got {getattr(self, side)!r}")
            stacks[getattr(self, side)].check_config(self)
        connection = CONNECTIONS[self.attention]
        if self.num_heads != 1 and not self.uses_heads:
            with_heads = tuple(name for name, c in CONNECTIONS.items() if c.uses_heads)
            raise ValueError(f"num_heads: expected 1 with attention={self.attention!r}, encoder={self.encoder!r} and "
                             f"decoder={self.decoder!r} (heads are for the connections {with_heads} and stacks "
                             f"with heads), got {self.num_heads}")
        connection.check_config(self)
        if self.output_from not in OUTPUT_FROM:
            raise ValueError(f"output_from: expected one of {OUTPUT_FROM}, got {self.output_from!r}")
        if self.output_from != "state" and not connection.feeds_input:
            raise ValueError(f"output_from: expected 'state' with attention={self.attention!r} (only a context "
                             f"that feeds the decoder input can also join the output), got {self.output_from!r}")
        if not isinstance(self.input_feeding, bool):
            raise ValueError(f"input_feeding: expected a bool, got {self.input_feeding!r}")
        if self.input_feeding and connection.feeds_input:
            raise ValueError(f"input_feeding: expected False with attention={self.attention!r}, whose context "
                             "already feeds the decoder input, got True")
        if self.tie_embeddings not in TIE_EMBEDDINGS:
            raise ValueError(f"tie_embeddings: expected one of {TIE_EMBEDDINGS}, got {self.tie_embeddings!r}")
        if self.tie_embeddings != "none" and self.output_dim != self.embed_dim:
            raise ValueError(f"tie_embeddings: expected 'none' when the output layer reads {self.output_dim} features "
                             f"and the embeddings have {self.embed_dim} (a tied output projection is the "
                             f"embedding transposed: make --embed-dim equal the output width, normally "
                             f"--hidden-dim), got {self.tie_embeddings!r}")
        if self.tie_embeddings == "all" and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(f"tie_embeddings: expected 'none' or 'target' with two vocabularies "
                             f"(src_vocab_size {self.src_vocab_size}, tgt_vocab_size {self.tgt_vocab_size}); "
                             f"'all' needs one shared vocabulary, got {self.tie_embeddings!r}")
        for name in ("dropout", "label_smoothing"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}")
            # a Python float: np.float64 (a float subclass) would promote a float32 model's arrays to float64
            object.__setattr__(self, name, float(value))
        specials = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        smallest_vocab = min(self.src_vocab_size, self.tgt_vocab_size)
        for name, value in specials.items():
            _require_int(name, value, 0)
            if value >= smallest_vocab:
                raise ValueError(f"{name}: expected an id below both vocabulary sizes ({smallest_vocab}), got {value}")
        if len(set(specials.values())) != 3:
            raise ValueError(f"pad_id, bos_id, eos_id: expected three distinct ids, got {specials}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def key_dim(self) -> int:
        """K: features of one encoder annotation (the attention keys)."""
        return self.hidden_dim * self.num_directions

    @property
    def attention_dim(self) -> int:
        """A: width of Bahdanau's hidden scoring layer."""
        return self.hidden_dim

    @property
    def uses_heads(self) -> bool:
        """True when num_heads means something: the connection or a side's stack has attention heads."""
        return CONNECTIONS[self.attention].uses_heads or ENCODERS[self.encoder].uses_heads or \
            DECODERS[self.decoder].uses_heads

    @property
    def uses_positions(self) -> bool:
        """True when a side's stack (the Transformer) encodes positions, up to max_positions."""
        return ENCODERS[self.encoder].uses_positions or DECODERS[self.decoder].uses_positions

    @property
    def inner_dim(self) -> int:
        """The Transformer feed-forward width: ffn_dim, or 4 * hidden_dim."""
        return 4 * self.hidden_dim if self.ffn_dim is None else self.ffn_dim

    @property
    def deep_output(self) -> bool:
        return self.output_from == "state+context+input"

    @property
    def output_dim(self) -> int:
        """F: features fed to the output projection (h_t, or the connection's attentional state)."""
        return CONNECTIONS[self.attention].output_dim(self)
