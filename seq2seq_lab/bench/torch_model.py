"""The PyTorch baseline: the same model on torch.nn's recurrent layers (cuDNN on a GPU), for side-by-side timing.

Same sizes, cells (LSTM gates i, f, g, o and GRU gates r, z, n: PyTorch's own
orders), connection, bridge and loss as seq2seq_ref; parameters load from our
flat dict (load_flat) and gradients map back to it (flat_grads), so the two
can be checked equal.  The benchmarks feed full-length batches (src_lengths
None: no packing, no masks); given src_lengths, the encoder runs on packed
sequences (each source's final state is the one at its own length) and the
connection masks the source padding, as the reference does.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq_ref import ModelConfig
from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY, SHORTLIST, length_normaliser, ranked_hypotheses
from seq2seq_ref.registry import CELLS, DECODERS, ENCODERS
from seq2seq_ref.transformer_layers import sinusoidal_positions

# torch's module for each of our cells: a whole sequence, and one step (for the decoder under Bahdanau)
SEQUENCE_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU}
STEP_MODULES = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}
# our cell parameter suffix -> (torch's name, transposed): x @ W is torch's W x. The LSTM's one bias b goes to
# bias_ih; its bias_hh stays 0 (load_flat zeroes what no flat name maps to).
CELL_PARAMETERS = {"W_x": ("weight_ih", True), "W_h": ("weight_hh", True), "b": ("bias_ih", False),
                   "b_x": ("bias_ih", False), "b_h": ("bias_hh", False)}


class Slot(NamedTuple):
    """Where one flat parameter lives in torch: param[rows], transposed or not."""

    param: nn.Parameter
    transpose: bool = False
    rows: int | slice = slice(None)

    def of(self, tensor: torch.Tensor) -> torch.Tensor:
        """This slot's view of the parameter (or of its gradient), in our layout."""
        part = tensor[self.rows]
        return part.T if self.transpose else part


def to_torch_state(state: tuple):
    """Our state tuple (h, c) or (h,) -> what nn.LSTM / nn.GRU (and their cells) take: (h, c) or h."""
    return state if len(state) > 1 else state[0]


def from_torch_state(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def masked_softmax(scores, mask):
    """Softmax over the last axis; mask (bool, broadcast) False -> weight exactly 0. None: no padding."""
    return torch.softmax(scores if mask is None else scores.masked_fill(~mask, -torch.inf), dim=-1)


class NoAttention(nn.Module):
    feeds_input = False

    def __init__(self, config: ModelConfig):
        super().__init__()

    def forward(self, hs, keys, src_mask):
        return hs

    def slots(self) -> dict[str, Slot]:
        return {}


class Luong(nn.Module):
    feeds_input = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        H, K = config.hidden_dim, config.key_dim
        self.W_a, self.W_c = nn.Linear(K, H, bias=False), nn.Linear(K + H, H, bias=False)

    def forward(self, hs, keys, src_mask):
        alpha = masked_softmax(torch.bmm(hs, self.W_a(keys).transpose(1, 2)), None if src_mask is None
                               else src_mask[:, None, :])
        return torch.tanh(self.W_c(torch.cat([torch.bmm(alpha, keys), hs], dim=-1)))

    def slots(self):
        # q^T W_a k = q . (k W_a^T): Linear(K -> H) has weight [H, K], our W_a as it is
        return {"attention/W_a": Slot(self.W_a.weight), "attention/W_c": Slot(self.W_c.weight, True)}


class Bahdanau(nn.Module):
    feeds_input = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        H, K, A = config.hidden_dim, config.key_dim, config.attention_dim
        self.W_q, self.W_k = nn.Linear(H, A, bias=False), nn.Linear(K, A, bias=False)
        self.v = nn.Linear(A, 1, bias=False)

    def memory(self, keys):
        return self.W_k(keys)

    def context(self, query, keys, keys_proj, src_mask):
        u = torch.tanh(keys_proj + self.W_q(query)[:, None, :])
        alpha = masked_softmax(self.v(u)[..., 0], src_mask)
        return torch.bmm(alpha[:, None, :], keys)[:, 0]

    def slots(self):
        return {"attention/W_q": Slot(self.W_q.weight, True), "attention/W_k": Slot(self.W_k.weight, True),
                "attention/v": Slot(self.v.weight, rows=0)}


class MultiHead(nn.Module):
    """nn.MultiheadAttention (query: the decoder states, keys = values: the annotations), then tanh([o; s] W_c)."""

    feeds_input = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        H, K = config.hidden_dim, config.key_dim
        self.mha = nn.MultiheadAttention(H, config.num_heads, kdim=K, vdim=K, batch_first=True)
        self.W_c = nn.Linear(2 * H, H, bias=False)

    def forward(self, hs, keys, src_mask):
        o, _ = self.mha(hs, keys, keys, key_padding_mask=None if src_mask is None else ~src_mask,
                        need_weights=False)
        return torch.tanh(self.W_c(torch.cat([o, hs], dim=-1)))

    def slots(self):
        mha, H = self.mha, self.mha.embed_dim
        blocks = {"q": slice(0, H), "k": slice(H, 2 * H), "v": slice(2 * H, 3 * H)}
        slots = {"attention/W_o": Slot(mha.out_proj.weight, True), "attention/b_o": Slot(mha.out_proj.bias),
                 "attention/W_c": Slot(self.W_c.weight, True)}
        for part, rows in blocks.items():
            # torch packs the three projections into one in_proj_weight when kdim == vdim == embed_dim
            packed = mha.in_proj_weight is not None
            slots[f"attention/W_{part}"] = (Slot(mha.in_proj_weight, True, rows) if packed
                                            else Slot(getattr(mha, f"{part}_proj_weight"), True))
            slots[f"attention/b_{part}"] = Slot(mha.in_proj_bias, rows=rows)
        return slots


TORCH_CONNECTIONS = {"none": NoAttention, "bahdanau": Bahdanau, "luong": Luong, "multihead": MultiHead}


def _cell_slots(prefix: str, module: nn.Module, suffix: str, cell: str) -> dict[str, Slot]:
    """Our parameters of one cell layer (prefix/W_x, ...) in a torch module (names end in suffix: "_l0", ...)."""
    slots = {}
    for ours in CELLS[cell].param_shapes(1, 1):
        name, transpose = CELL_PARAMETERS[ours]
        slots[f"{prefix}/{ours}"] = Slot(getattr(module, f"{name}{suffix}"), transpose)
    return slots


class TransformerEncoder(nn.Module):
    """torch.nn.TransformerEncoder(norm_first=True) with a final LayerNorm: seq2seq_ref.transformer's (T5)-(T8)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.hidden_dim
        layer = nn.TransformerEncoderLayer(d, config.num_heads, config.inner_dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.stack = nn.TransformerEncoder(layer, config.num_layers, norm=nn.LayerNorm(d),
                                           enable_nested_tensor=False)
        self.register_buffer("positions", torch.as_tensor(sinusoidal_positions(config.max_positions, d)),
                             persistent=False)

    def forward(self, x, src_lengths=None):
        """x [B, S, d] embedded -> keys [B, S, d] and the bridge state (h,), h [L, B, d] the masked mean (T8)."""
        B, S, d = x.shape
        x = np.sqrt(d) * x + self.positions[:S].to(x.dtype)                                   # (T5)
        lengths = torch.full((B,), S, device=x.device) if src_lengths is None else torch.as_tensor(
            src_lengths, device=x.device)
        valid = torch.arange(S, device=x.device)[None, :] < lengths[:, None]
        keys = self.stack(x, src_key_padding_mask=None if src_lengths is None else ~valid)
        mean = (keys * valid[..., None]).sum(1) / lengths[:, None].to(keys.dtype)
        return keys, (mean.expand(self.config.num_layers, B, d),)

    def slots(self) -> dict[str, Slot]:
        slots, d = {}, self.config.hidden_dim
        for l, layer in enumerate(self.stack.layers):
            prefix = f"encoder/l{l}"
            for k, part in enumerate("qkv"):
                rows = slice(k * d, (k + 1) * d)
                slots[f"{prefix}/attn/W_{part}"] = Slot(layer.self_attn.in_proj_weight, True, rows)
                slots[f"{prefix}/attn/b_{part}"] = Slot(layer.self_attn.in_proj_bias, False, rows)
            slots[f"{prefix}/attn/W_o"] = Slot(layer.self_attn.out_proj.weight, True)
            slots[f"{prefix}/attn/b_o"] = Slot(layer.self_attn.out_proj.bias)
            for ours, linear in (("1", layer.linear1), ("2", layer.linear2)):
                slots[f"{prefix}/ffn/W_{ours}"] = Slot(linear.weight, True)
                slots[f"{prefix}/ffn/b_{ours}"] = Slot(linear.bias)
            for ours, norm in (("ln_1", layer.norm1), ("ln_2", layer.norm2)):
                slots[f"{prefix}/{ours}/gamma"], slots[f"{prefix}/{ours}/beta"] = Slot(norm.weight), Slot(norm.bias)
        slots["encoder/ln_f/gamma"], slots["encoder/ln_f/beta"] = Slot(self.stack.norm.weight), \
            Slot(self.stack.norm.bias)
        return slots


class TransformerDecoder(nn.Module):
    """torch.nn.TransformerDecoder(norm_first=True) with a final LayerNorm: seq2seq_ref.transformer_decoder's
    (T9)-(T13).  Where the annotations are wider than d (a bidirectional recurrent encoder), each block's
    cross-attention is a MultiheadAttention with kdim = vdim = K."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, K = config.hidden_dim, config.key_dim
        layer = nn.TransformerDecoderLayer(d, config.num_heads, config.inner_dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.stack = nn.TransformerDecoder(layer, config.num_layers, norm=nn.LayerNorm(d))
        if K != d:
            for block in self.stack.layers:
                block.multihead_attn = nn.MultiheadAttention(d, config.num_heads, dropout=0.0, batch_first=True,
                                                             kdim=K, vdim=K)
        self.register_buffer("positions", torch.as_tensor(sinusoidal_positions(config.max_positions, d)),
                             persistent=False)

    def forward(self, y, keys, src_mask):
        """y [B, T, d] embedded tgt_in -> features [B, T, d]."""
        T, d = y.shape[1], y.shape[2]
        x = np.sqrt(d) * y + self.positions[:T].to(y.dtype)                                   # (T9)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=y.device), 1)
        return self.stack(x, keys, tgt_mask=causal, memory_key_padding_mask=None if src_mask is None else ~src_mask)

    def empty_cache(self, batch: int, like: torch.Tensor) -> tuple:
        """The decoding state before the first position: each block's self-attention keys and values, none yet."""
        h, d = self.config.num_heads, self.config.hidden_dim
        empty = like.new_zeros(batch, h, 0, d // h)
        return (empty,) * (2 * self.config.num_layers)

    def memory(self, keys, src_mask) -> tuple:
        """What every step reads of the source, batch first: each block's cross-attention keys and values
        [B, heads, S, d / heads] (projected once), then the padding mask [B, 1, 1, S] (None: no padding)."""
        h, d = self.config.num_heads, self.config.hidden_dim
        projected = []
        for layer in self.stack.layers:
            attention = layer.multihead_attn
            for part in (1, 2):
                weight = (attention.in_proj_weight[part * d:(part + 1) * d] if attention._qkv_same_embed_dim
                          else (attention.k_proj_weight, attention.v_proj_weight)[part - 1])
                projected.append(_heads(F.linear(keys, weight, attention.in_proj_bias[part * d:(part + 1) * d]), h))
        return (*projected, None if src_mask is None else src_mask[:, None, None, :])

    def step(self, y_t, cache: tuple, memory: tuple):
        """One position with cached keys and values (fairseq's incremental state): y_t [N, d] embedded, cache
        from empty_cache or the last step -> the feature [N, d] and the cache one position longer.  The same
        arithmetic as forward() at the last position of the prefix."""
        h, d = self.config.num_heads, self.config.hidden_dim
        x = (math.sqrt(d) * y_t + self.positions[cache[0].shape[2]].to(y_t.dtype))[:, None]   # (T9)
        grown, mask = [], memory[-1]
        for l, layer in enumerate(self.stack.layers):
            attention = layer.self_attn
            q, k, v = (_heads(part, h) for part in F.linear(layer.norm1(x), attention.in_proj_weight,
                                                                attention.in_proj_bias).chunk(3, dim=-1))
            k, v = torch.cat([cache[2 * l], k], dim=2), torch.cat([cache[2 * l + 1], v], dim=2)
            grown += [k, v]
            x = x + attention.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))      # (T10)
            cross = layer.multihead_attn
            q = _heads(F.linear(layer.norm2(x), cross.in_proj_weight[:d] if cross._qkv_same_embed_dim
                                else cross.q_proj_weight, cross.in_proj_bias[:d]), h)
            x = x + cross.out_proj(_merge_heads(F.scaled_dot_product_attention(
                q, memory[2 * l], memory[2 * l + 1], attn_mask=mask)))                              # (T11)
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))                  # (T12)
        return self.stack.norm(x)[:, 0], tuple(grown)                                              # (T13)

    @staticmethod
    def _attention_slots(prefix, attention, d) -> dict[str, Slot]:
        slots = {}
        for k, part in enumerate("qkv"):
            rows = slice(k * d, (k + 1) * d)
            if attention._qkv_same_embed_dim:
                slots[f"{prefix}/W_{part}"] = Slot(attention.in_proj_weight, True, rows)
            else:
                slots[f"{prefix}/W_{part}"] = Slot(getattr(attention, f"{part}_proj_weight"), True)
            slots[f"{prefix}/b_{part}"] = Slot(attention.in_proj_bias, False, rows)
        slots[f"{prefix}/W_o"], slots[f"{prefix}/b_o"] = Slot(attention.out_proj.weight, True), \
            Slot(attention.out_proj.bias)
        return slots

    def slots(self) -> dict[str, Slot]:
        slots, d = {}, self.config.hidden_dim
        for l, layer in enumerate(self.stack.layers):
            prefix = f"decoder/l{l}"
            slots.update(self._attention_slots(f"{prefix}/self", layer.self_attn, d))
            slots.update(self._attention_slots(f"{prefix}/cross", layer.multihead_attn, d))
            for ours, linear in (("1", layer.linear1), ("2", layer.linear2)):
                slots[f"{prefix}/ffn/W_{ours}"] = Slot(linear.weight, True)
                slots[f"{prefix}/ffn/b_{ours}"] = Slot(linear.bias)
            for ours, norm in (("ln_1", layer.norm1), ("ln_2", layer.norm2), ("ln_3", layer.norm3)):
                slots[f"{prefix}/{ours}/gamma"], slots[f"{prefix}/{ours}/beta"] = Slot(norm.weight), Slot(norm.bias)
        slots["decoder/ln_f/gamma"], slots["decoder/ln_f/beta"] = Slot(self.stack.norm.weight), \
            Slot(self.stack.norm.bias)
        return slots


def _heads(x, heads: int):
    """[N, T, d] -> [N, heads, T, d / heads]."""
    N, T, d = x.shape
    return x.view(N, T, heads, d // heads).transpose(1, 2)


def _merge_heads(x):
    """[N, heads, T, d / heads] -> [N, T, d]."""
    N, heads, T, width = x.shape
    return x.transpose(1, 2).reshape(N, T, heads * width)


def select_rows(tensors: tuple, rows) -> tuple:
    """Each tensor's rows (dimension 0) in the order of rows; None stays None (fairseq's reorder_encoder_out)."""
    return tuple(None if t is None else t.index_select(0, rows) for t in tensors)





def best_candidates(candidates, step, count: int):
    """The first `count` flat indices [N, count] of seq2seq_ref.decode.rank_candidates(candidates, step): by
    score, then the step's own log-probability, then the lower index.  torch.topk's order among ties is not
    specified, so it only shortlists SHORTLIST * count / 2 candidates; those are ordered by the three keys with
    stable sorts (last key first).  Exact whenever every candidate at least as good as the count-th best score
    is on the shortlist (checked); otherwise the whole row is ordered."""
    n = candidates.shape[1]
    values, listed = candidates.topk(min(max(SHORTLIST * count // 2, count), n), dim=1)
    if listed.shape[1] < n and not bool(((candidates >= values[:, count - 1:count]).sum(1) <= listed.shape[1]).all()):
        values, listed = candidates.topk(n, dim=1)
    listed, order = listed.sort(dim=1)
    values = values.gather(1, order)
    order = torch.sort(-step.gather(1, listed), dim=1, stable=True).indices
    listed, values = listed.gather(1, order), values.gather(1, order)
    order = torch.sort(-values, dim=1, stable=True).indices
    return listed.gather(1, order[:, :count])


# The stacks that are not a recurrent cell on each layer (seq2seq_ref.registry.ENCODERS, DECODERS), by name
TORCH_ENCODERS = {"transformer": TransformerEncoder}
TORCH_DECODERS = {"transformer": TransformerDecoder}


class TorchSeq2Seq(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        E, H, K, L = config.embed_dim, config.hidden_dim, config.key_dim, config.num_layers
        self.src_embed = nn.Embedding(config.src_vocab_size, E)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, E)
        if config.encoder in TORCH_ENCODERS:
            self.encoder = TORCH_ENCODERS[config.encoder](config)
        else:
            self.encoder = SEQUENCE_MODULES[config.encoder](E, H, L, batch_first=True,
                                                            bidirectional=config.bidirectional)
        self.output = nn.Linear(config.output_dim, config.tgt_vocab_size)
        if config.tie_embeddings != "none":  # (W1) one Parameter: autograd sums its gradients (W1')
            self.output.weight = self.tgt_embed.weight
        if config.tie_embeddings == "all":
            self.src_embed.weight = self.tgt_embed.weight
        if config.decoder in TORCH_DECODERS:  # it reads the encoder through its own cross-attention
            self.attention, self.decoder = None, TORCH_DECODERS[config.decoder](config)
            return
        self.attention = TORCH_CONNECTIONS[config.attention](config)
        if self.attention.feeds_input:  # (A5) the context joins each step's input: one cell per layer
            self.cells = nn.ModuleList(STEP_MODULES[config.decoder](E + K if l == 0 else H, H) for l in range(L))
        else:
            self.decoder = SEQUENCE_MODULES[config.decoder](E, H, L, batch_first=True)

    def encode(self, src, src_lengths=None):
        """-> keys [B, S, K] and the decoder's initial state (a tuple named as the decoder cell's, each [L, B, H])."""
        x = self.src_embed(src)
        if self.config.encoder in TORCH_ENCODERS:
            keys, state = self.encoder(x, src_lengths)
            return keys, self.bridge(state)
        if src_lengths is not None:
            x = pack_padded_sequence(x, torch.as_tensor(src_lengths).cpu(), batch_first=True, enforce_sorted=False)
        keys, state = self.encoder(x)
        if src_lengths is not None:
            keys, _ = pad_packed_sequence(keys, batch_first=True, total_length=src.shape[1])
        state = from_torch_state(state)
        if self.config.bidirectional:  # (B2) sum the two directions' final states
            L, B, H = self.config.num_layers, src.shape[0], self.config.hidden_dim
            state = tuple(s.view(L, 2, B, H).sum(1) for s in state)
        return keys, self.bridge(state)

    def bridge(self, state: tuple) -> tuple:
        """(B3) match entries by name: LSTM -> GRU passes h only, GRU -> LSTM passes h and c = 0.  A decoder
        with its own stack starts from an empty key/value cache."""
        if self.attention is None:
            return self.decoder.empty_cache(state[0].shape[1], state[0])
        named = dict(zip(ENCODERS[self.config.encoder].state_names, state))
        return tuple(named[n] if n in named else torch.zeros_like(state[0])
                     for n in DECODERS[self.config.decoder].state_names)

    def decoder_memory(self, keys, src_mask) -> tuple:
        """What every decoding step reads of the source, batch first (None where absent): the Transformer
        decoder's projected cross-attention keys and values and mask; else keys [B, S, K], Bahdanau's keys W_k,
        and the mask [B, S]."""
        if self.attention is None:
            return self.decoder.memory(keys, src_mask)
        return keys, self.attention.memory(keys) if self.attention.feeds_input else None, src_mask

    def step(self, y_t, state, memory: tuple):
        """One target position: y_t [N, E] -> feature [N, F] and the new state (memory: decoder_memory's)."""
        if self.attention is None:
            return self.decoder.step(y_t, state, memory)
        keys, keys_proj, src_mask = memory
        if not self.attention.feeds_input:
            hs, state = self.decoder(y_t[:, None], to_torch_state(state))
            return self.attention(hs, keys, src_mask)[:, 0], from_torch_state(state)
        x = torch.cat([y_t, self.attention.context(state[0][-1], keys, keys_proj, src_mask)], dim=-1)
        layers = []
        for layer, cell in enumerate(self.cells):
            layers.append(from_torch_state(cell(x, to_torch_state(tuple(s[layer] for s in state)))))
            x = layers[-1][0]
        return x, tuple(torch.stack(entry) for entry in zip(*layers))

    def reorder_state(self, state: tuple, rows) -> tuple:
        """The decoding state of the prefixes `rows` (fairseq's reorder_incremental_state): recurrent states
        are [L, N, H], the Transformer's cache batch first."""
        return tuple(s.index_select(0 if self.attention is None else 1, rows) for s in state)

    def start(self, src, src_lengths):
        """Encode: -> (decoder_memory, initial state)."""
        keys, state = self.encode(src, src_lengths)
        return self.decoder_memory(keys, self.source_mask(src, src_lengths)), state

    def step_log_probs(self, tokens, state, memory):
        """As seq2seq_ref.decode.step_log_probs: log p(next token) [N, V] (pad and bos -inf), the new state."""
        feature, state = self.step(self.tgt_embed(tokens), state, memory)
        log_p = F.log_softmax(self.output(feature), dim=-1)
        return log_p.index_fill_(1, torch.tensor([self.config.pad_id, self.config.bos_id],
                                                 device=log_p.device), -torch.inf), state

    def features(self, tgt_in, keys, state, src_mask):
        y = self.tgt_embed(tgt_in)
        if self.attention is None:
            return self.decoder(y, keys, src_mask)
        if self.attention.feeds_input:
            memory, outputs = self.decoder_memory(keys, src_mask), []
            for t in range(y.shape[1]):
                feature, state = self.step(y[:, t], state, memory)
                outputs.append(feature)
            return torch.stack(outputs, 1)
        hs, _ = self.decoder(y, to_torch_state(state))
        return self.attention(hs, keys, src_mask)

    @staticmethod
    def source_mask(src, src_lengths):
        if src_lengths is None:
            return None
        return torch.arange(src.shape[1], device=src.device)[None, :] < torch.as_tensor(src_lengths,
                                                                                       device=src.device)[:, None]

    def loss(self, src, tgt_in, tgt_out, tgt_mask, src_lengths=None):
        """Mean cross-entropy over the tokens where tgt_mask is 1; src_lengths None: full-length sources."""
        keys, state = self.encode(src, src_lengths)
        logits = self.output(self.features(tgt_in, keys, state, self.source_mask(src, src_lengths)))
        nll = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), reduction="none")
        return (nll * tgt_mask.flatten()).sum() / tgt_mask.sum()

    @torch.inference_mode()
    def greedy(self, src, max_len, src_lengths=None):
        """As seq2seq_ref.decode.greedy_decode's tokens: the argmax token (the lowest id of a tie; pad and bos
        never) at each step, pad after EOS, until every source has ended or max_len: int64 [B, max_len]."""
        config = self.config
        memory, state = self.start(src, src_lengths)
        B = src.shape[0]
        tokens = torch.full((B, max_len), config.pad_id, dtype=torch.long, device=src.device)
        previous = torch.full((B,), config.bos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(B, dtype=torch.bool, device=src.device)
        for t in range(max_len):
            log_p, state = self.step_log_probs(previous, state, memory)
            previous = torch.where(finished, config.pad_id, log_p.argmax(-1))
            tokens[:, t] = previous
            finished |= previous == config.eos_id
            if finished.all():
                break
        return tokens

    @torch.inference_mode()
    def beam_search(self, src, src_lengths, beam_size: int, max_len: int,
                    length_penalty: float = DEFAULT_LENGTH_PENALTY, early_stop: bool = False):
        """seq2seq_ref.decode.beam_search, step for step (its finished set, GNMT length normalisation, tie-breaks
        and per-sentence stop), organised as fairseq's SequenceGenerator: the K hypotheses of every sentence are
        rows of one batch, decoded with incremental state that index_select reorders after each step, and a
        sentence whose search is over leaves the batch (its rows of the state and the memory are dropped).

        src int64 [B, S], src_lengths [B] (None: full length); early_stop: the reference's (N4).  Returns numpy
        tokens int64 [B, K, max_len] (pad after EOS) and scores [B, K], best first, as the reference's.
        """
        config, K, V = self.config, beam_size, self.config.tgt_vocab_size
        B, device = src.shape[0], src.device
        memory, state = self.start(src, src_lengths)
        expand = torch.arange(B, device=device).repeat_interleave(K)
        memory, state = select_rows(memory, expand), self.reorder_state(state, expand)
        dtype = self.output.bias.dtype
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        live_log_p = torch.full((B, K), -torch.inf, dtype=dtype, device=device)
        live_log_p[:, 0] = 0.0  # one live start per sentence, so the first step's K picks differ
        live_tokens = torch.full((B, K, max_len), config.pad_id, dtype=torch.long, device=device)
        finished_scores = torch.full((B, K), -torch.inf, dtype=dtype, device=device)
        finished_tokens = live_tokens.clone()
        live_length = torch.zeros(B, dtype=torch.long, device=device)
        active = torch.arange(B, device=device)  # the sentences still searched, K rows each in the model's batch
        previous = torch.full((B * K,), config.bos_id, dtype=torch.long, device=device)
        # the normalisers as the reference computes them (NumPy, in the scores' dtype): the same roundings
        best_bound = float(length_normaliser(np_dtype.type(max_len), length_penalty))
        for t in range(max_len):
            A = len(active)
            rows = torch.arange(A, device=device)[:, None]
            step, state = self.step_log_probs(previous, state, memory)
            step = step.view(A, K * V)
            candidates = (live_log_p[active][..., None] + step.view(A, K, V)).view(A, K * V)
            top = best_candidates(candidates, step, 2 * K)
            top_log_p, beam, token = candidates.gather(1, top), top // V, top % V
            extended = live_tokens[active[:, None], beam]
            extended[:, :, t] = token
            ends = (token[:, :K] == config.eos_id) & torch.isfinite(top_log_p[:, :K])
            normaliser = float(length_normaliser(np_dtype.type(t + 1), length_penalty))
            new_scores = torch.where(ends, top_log_p[:, :K] / normaliser, -torch.inf)
            pooled_scores = torch.cat([finished_scores[active], new_scores], dim=1)
            pooled_tokens = torch.cat([finished_tokens[active], extended[:, :K]], dim=1)
            kept = torch.sort(-pooled_scores, dim=1, stable=True).indices[:, :K]
            live = torch.sort((token == config.eos_id).to(torch.uint8), dim=1, stable=True).indices[:, :K]
            finished_scores[active] = pooled_scores.gather(1, kept)
            finished_tokens[active] = pooled_tokens[rows, kept]
            live_log_p[active] = top_log_p.gather(1, live)
            live_tokens[active] = extended[rows, live]
            live_length[active] = t + 1
            previous = token.gather(1, live)
            source_rows = rows * K + beam.gather(1, live)
            # (N2): no live prefix can beat the best finished hypothesis
            searching = live_log_p[active].max(dim=1).values / best_bound > finished_scores[active, 0]
            if early_stop:  # (N4): the finished set is full
                searching &= ~torch.isfinite(finished_scores[active, -1])
            if not searching.all():
                active, source_rows, previous = active[searching], source_rows[searching], previous[searching]
                if not len(active):
                    break
                memory = select_rows(memory, (rows[searching] * K + torch.arange(K, device=device)).view(-1))
            state = self.reorder_state(state, source_rows.view(-1))
            previous = previous.view(-1)
        return ranked_hypotheses(finished_scores.cpu().numpy(), finished_tokens.cpu().numpy(),
                                 live_log_p.cpu().numpy(), live_tokens.cpu().numpy(), live_length.cpu().numpy(),
                                 length_penalty)

    def flat_slots(self) -> dict[str, Slot]:
        """Every flat parameter name of seq2seq_ref -> where it lives here."""
        config = self.config
        slots = {"src_embed/W": Slot(self.src_embed.weight), "tgt_embed/W": Slot(self.tgt_embed.weight),
                 "output/W": Slot(self.output.weight, True), "output/b": Slot(self.output.bias)}
        if config.tie_embeddings != "none":
            del slots["output/W"]
        if config.tie_embeddings == "all":
            del slots["src_embed/W"]
            slots["embed/W"] = slots.pop("tgt_embed/W")
        if config.encoder in TORCH_ENCODERS:
            slots.update(self.encoder.slots())
        for l in range(config.num_layers):
            for direction, suffix in (("fwd", ""), ("bwd", "_reverse"))[: config.num_directions]:
                if config.encoder in TORCH_ENCODERS:
                    break
                slots.update(_cell_slots(f"encoder/l{l}/{direction}", self.encoder, f"_l{l}{suffix}", config.encoder))
            if self.attention is None:
                continue
            module, suffix = (self.cells[l], "") if self.attention.feeds_input else (self.decoder, f"_l{l}")
            slots.update(_cell_slots(f"decoder/l{l}", module, suffix, config.decoder))
        slots.update(self.decoder.slots() if self.attention is None else self.attention.slots())
        return slots

    @torch.no_grad()
    def load_flat(self, params) -> "TorchSeq2Seq":
        """Copy our flat parameters in; every torch parameter no flat name maps to (the LSTM's bias_hh) is 0."""
        slots = self.flat_slots()
        if set(slots) != set(params):
            raise ValueError(f"params: expected the names {sorted(slots)}, got {sorted(params)}")
        for param in self.parameters():
            param.zero_()
        for name, slot in slots.items():
            slot.of(slot.param).copy_(torch.as_tensor(np.asarray(params[name])))
        return self

    def flat_grads(self) -> dict[str, np.ndarray]:
        """The gradients after backward(), by our flat names and in our layout (numpy)."""
        out = {}
        for name, slot in self.flat_slots().items():
            grad = slot.param.grad if slot.param.grad is not None else torch.zeros_like(slot.param)
            out[name] = slot.of(grad).detach().cpu().numpy().copy()
        return out
