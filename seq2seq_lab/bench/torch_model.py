"""The PyTorch baseline: the same model on torch.nn.LSTM (cuDNN on a GPU), for side-by-side timing.

Same sizes, gates (i, f, g, o: PyTorch's own order), attention, bridge and loss
as seq2seq_ref; parameters load from our flat dict (load_flat), so the two
can be checked equal.  It takes full-length batches only (no packing), which
is what the benchmarks feed it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq_ref import ModelConfig


class TorchSeq2Seq(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        E, H, K, A = config.embed_dim, config.hidden_dim, config.key_dim, config.attention_dim
        self.src_embed = nn.Embedding(config.src_vocab_size, E)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, E)
        self.encoder = nn.LSTM(E, H, config.num_layers, batch_first=True, bidirectional=config.bidirectional)
        if config.attention == "bahdanau":
            self.W_q, self.W_k = nn.Linear(H, A, bias=False), nn.Linear(K, A, bias=False)
            self.v = nn.Linear(A, 1, bias=False)
            self.cells = nn.ModuleList(nn.LSTMCell(E + K if l == 0 else H, H) for l in range(config.num_layers))
        else:
            self.decoder = nn.LSTM(E, H, config.num_layers, batch_first=True)
            if config.attention == "luong":
                self.W_a, self.W_c = nn.Linear(K, H, bias=False), nn.Linear(K + H, H, bias=False)
        self.output = nn.Linear(H, config.tgt_vocab_size)

    def encode(self, src):
        keys, (h, c) = self.encoder(self.src_embed(src))
        if self.config.bidirectional:  # (B2) sum the two directions' final states
            L, B, H = self.config.num_layers, src.shape[0], self.config.hidden_dim
            h, c = h.view(L, 2, B, H).sum(1), c.view(L, 2, B, H).sum(1)
        return keys, (h, c)

    def bahdanau_step(self, y_t, state, keys, keys_proj):
        h, c = state
        u = torch.tanh(keys_proj + self.W_q(h[-1])[:, None, :])
        alpha = torch.softmax(self.v(u)[..., 0], dim=-1)
        x = torch.cat([y_t, torch.bmm(alpha[:, None, :], keys)[:, 0]], dim=-1)
        new_h, new_c = [], []
        for layer, cell in enumerate(self.cells):
            h_l, c_l = cell(x, (h[layer], c[layer]))
            new_h.append(h_l)
            new_c.append(c_l)
            x = h_l
        return x, (torch.stack(new_h), torch.stack(new_c))

    def luong(self, hs, keys):
        alpha = torch.softmax(torch.bmm(hs, self.W_a(keys).transpose(1, 2)), dim=-1)
        return torch.tanh(self.W_c(torch.cat([torch.bmm(alpha, keys), hs], dim=-1)))

    def features(self, tgt_in, keys, state):
        y = self.tgt_embed(tgt_in)
        if self.config.attention == "bahdanau":
            keys_proj, outputs = self.W_k(keys), []
            for t in range(y.shape[1]):
                feature, state = self.bahdanau_step(y[:, t], state, keys, keys_proj)
                outputs.append(feature)
            return torch.stack(outputs, 1)
        hs, _ = self.decoder(y, state)
        return self.luong(hs, keys) if self.config.attention == "luong" else hs

    def loss(self, src, tgt_in, tgt_out, tgt_mask):
        keys, state = self.encode(src)
        logits = self.output(self.features(tgt_in, keys, state))
        nll = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), reduction="none")
        return (nll * tgt_mask.flatten()).sum() / tgt_mask.sum()

    @torch.no_grad()
    def greedy(self, src, max_len):
        keys, state = self.encode(src)
        keys_proj = self.W_k(keys) if self.config.attention == "bahdanau" else None
        token = torch.full((src.shape[0],), self.config.bos_id, dtype=torch.long, device=src.device)
        tokens = []
        for _ in range(max_len):
            y = self.tgt_embed(token)
            if self.config.attention == "bahdanau":
                feature, state = self.bahdanau_step(y, state, keys, keys_proj)
            else:
                hs, state = self.decoder(y[:, None], state)
                feature = (self.luong(hs, keys) if self.config.attention == "luong" else hs)[:, 0]
            logits = self.output(feature)
            logits[:, [self.config.pad_id, self.config.bos_id]] = -torch.inf
            token = logits.argmax(-1)
            tokens.append(token)
        return torch.stack(tokens, 1)

    @torch.no_grad()
    def load_flat(self, params) -> "TorchSeq2Seq":
        """Copy our flat parameters in (x @ W layout -> PyTorch's W x; our one bias -> bias_ih, bias_hh = 0)."""
        def put(target, value, transpose=False):
            value = torch.as_tensor(value)
            target.copy_(value.T if transpose else value)

        put(self.src_embed.weight, params["src_embed/W"])
        put(self.tgt_embed.weight, params["tgt_embed/W"])
        for l in range(self.config.num_layers):
            for direction, suffix in (("fwd", ""), ("bwd", "_reverse"))[: self.config.num_directions]:
                prefix = f"encoder/l{l}/{direction}"
                put(getattr(self.encoder, f"weight_ih_l{l}{suffix}"), params[f"{prefix}/W_x"], True)
                put(getattr(self.encoder, f"weight_hh_l{l}{suffix}"), params[f"{prefix}/W_h"], True)
                put(getattr(self.encoder, f"bias_ih_l{l}{suffix}"), params[f"{prefix}/b"])
                getattr(self.encoder, f"bias_hh_l{l}{suffix}").zero_()
            prefix = f"decoder/l{l}"
            if self.config.attention == "bahdanau":
                cell = self.cells[l]
                names = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
            else:
                names = tuple(getattr(self.decoder, f"{n}_l{l}") for n in ("weight_ih", "weight_hh", "bias_ih",
                                                                           "bias_hh"))
            put(names[0], params[f"{prefix}/W_x"], True)
            put(names[1], params[f"{prefix}/W_h"], True)
            put(names[2], params[f"{prefix}/b"])
            names[3].zero_()
        if self.config.attention == "bahdanau":
            put(self.W_q.weight, params["attention/W_q"], True)
            put(self.W_k.weight, params["attention/W_k"], True)
            put(self.v.weight, params["attention/v"][None, :])
        elif self.config.attention == "luong":
            put(self.W_a.weight, params["attention/W_a"])   # q^T W_a k = q . (k W_a^T): Linear(K -> H) weight [H, K]
            put(self.W_c.weight, params["attention/W_c"], True)
        put(self.output.weight, params["output/W"], True)
        put(self.output.bias, params["output/b"])
        return self
