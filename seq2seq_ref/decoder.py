"""The recurrent decoder stack: stacked layers of any cell, a connection, and the features fed to the output
layer; and the bridge (B3) from the encoder's final states.

Two paths compute the same function:
* step_forward, one target position at a time; used for decoding, and for
  training when the connection feeds the decoder input (Bahdanau's (A5));
* forward's parallel path when the connection reads the decoder output
  (none, luong, ...): each layer runs over the whole sequence, then the
  connection maps all the top states at once.
"""
from __future__ import annotations

import numpy as np

from .connections import CONNECTIONS
from .components import DecoderStack, Memory, cell_step_flops, layer_params
from .layers import dropout_backward, dropout_forward


def _add(total: dict, more: dict) -> None:
    for name, value in more.items():
        total[name] = total[name] + value if name in total else value


class RecurrentDecoder(DecoderStack):
    """A DecoderStack of `cell` layers joined to the encoder by the connection config.attention."""

    def __init__(self, cell):
        self.cell, self.name, self.state_names = cell, cell.name, cell.state_names

    def __repr__(self):
        return f"RecurrentDecoder({self.cell.__name__})"

    def check_config(self, config):
        self.cell.check_config(config, "decoder")

    def param_shapes(self, config):
        """decoder/l{l}/<p>: the cell's parameters, input D_0 = E (+ the connection's input_dim, + F with input
        feeding), D_l = H above; then attention/<p>, the connection's."""
        connection, shapes = CONNECTIONS[config.attention], {}
        for layer in range(config.num_layers):
            feed = config.output_dim if config.input_feeding else 0  # (F1) [y_t ; f_{t-1}]
            D = config.embed_dim + connection.input_dim(config) + feed if layer == 0 else config.hidden_dim
            for suffix, shape in self.cell.param_shapes(D, config.hidden_dim).items():
                shapes[f"decoder/l{layer}/{suffix}"] = shape
        shapes.update(connection.param_shapes(config))
        return shapes

    def init_param(self, name, shape, config, rng):
        if name.startswith("attention/"):
            return CONNECTIONS[config.attention].init_param(name, shape, rng)
        return self.cell.init_param(name.rsplit("/", 1)[1], shape, config.hidden_dim, rng)

    def dropout_shapes(self, config, B, S, T):
        """(D1) on the inputs of layers >= 1."""
        return {f"decoder/l{layer}": (B, T, config.hidden_dim) for layer in range(1, config.num_layers)}

    def initial_states(self, encoder_states, encoder_state_names, config):
        """(B3) the decoder's initial states from the encoder's final ones, entry by entry by name.

        An entry the decoder cell has and the encoder lacks starts at zero (GRU -> LSTM: c_0 = 0); one the
        encoder has and the decoder lacks is not passed (LSTM -> GRU passes h only).
        """
        out = []
        for state in encoder_states:
            named = dict(zip(encoder_state_names, state))
            out.append(tuple(named[n] if n in named else np.zeros_like(state[0]) for n in self.state_names))
        if config.input_feeding:  # (F1) f_0 = 0, carried with the states
            h = encoder_states[0][0]
            out.append((np.zeros((h.shape[0], config.output_dim), dtype=h.dtype),))
        return out

    def initial_states_backward(self, dstates, encoder_state_names, config):
        """(B3') gradients back to the encoder's final states; an entry the decoder did not take gets zero."""
        out = []
        for dstate in dstates[: config.num_layers]:  # past them: input feeding's f_0, a constant
            named = dict(zip(self.state_names, dstate))
            out.append(tuple(named[n] if n in named else np.zeros_like(dstate[0]) for n in encoder_state_names))
        return out

    def memory(self, keys, src_mask, params, config) -> Memory:
        """What the connection reads, with what it precomputes once per sentence (e.g. (A0))."""
        return Memory(keys, src_mask, CONNECTIONS[config.attention].memory_forward(keys, params))

    def memory_backward(self, dkeys, dderived, memory: Memory, params, config):
        """Gradients through memory: the keys' total gradient and the connection's memory parameters'."""
        dkeys_derived, grads = CONNECTIONS[config.attention].memory_backward(dderived, memory.keys, params)
        return dkeys + dkeys_derived, grads

    def step(self, y_t, states, memory: Memory, params, config, step_mask=None):
        """One decoding position: feature [B, F], new states, alpha [B, S] or None (step_mask: bool[B], False
        where the state is carried; None: every row steps)."""
        step_mask = np.ones(len(y_t), dtype=bool) if step_mask is None else step_mask
        feature, states, alpha, _ = self.step_forward(y_t, states, memory, step_mask, params, config)
        return feature, states, alpha

    def step_forward(self, y_t, states, memory: Memory, step_mask, params, config, layer_masks=None):
        """One target position.

        y_t:    [B, E]       embedded previous target token
        states: L state tuples of the decoder cell, each entry [B, H]; with input feeding one more, (f_{t-1},)
        step_mask: bool[B]   False where the target has ended (state carried)
        layer_masks: per-layer dropout masks [B, D] for layers >= 1, or None
        Returns feature [B, F], the new states, alpha [B, S] (None without
        attention weights) and the cache.
        """
        cell, connection = self.cell, CONNECTIONS[config.attention]
        layer_masks = layer_masks or [None] * config.num_layers
        alpha = connection_cache = feed = None
        x = y_t
        if config.input_feeding:
            states, (feed,) = states[:-1], states[-1]
            x = np.concatenate([y_t, feed], axis=1)  # (F1)
        if connection.feeds_input:
            context, alpha, connection_cache = connection.context_forward(states[-1][0], memory, params, config)
            x = np.concatenate([y_t, context], axis=1)  # (A5)
        new_states, cell_caches = [], []
        for layer in range(config.num_layers):
            x = dropout_forward(x, layer_masks[layer])
            state, cell_cache = cell.step_forward(x, states[layer], layer_params(params, f"decoder/l{layer}", cell),
                                                  step_mask)
            new_states.append(state)
            cell_caches.append(cell_cache)
            x = state[0]
        feature = x
        if connection.feeds_input and config.deep_output:
            feature = np.concatenate([x, context, y_t], axis=1)  # (A6)
        if not connection.feeds_input:
            feature, alpha, connection_cache = connection.output_forward(x[:, None], memory, params, config)
            feature, alpha = feature[:, 0], None if alpha is None else alpha[:, 0]
        if config.input_feeding:
            new_states.append((np.where(step_mask[:, None], feature, feed),))  # (F1) carried past the end, as a state
        cache = (config, y_t.shape[1], layer_masks, cell_caches, connection_cache, step_mask)
        return feature, new_states, alpha, cache


    def step_backward(self, dfeature, dstates, cache):
        """dfeature: [B, F]; dstates: L state-tuple gradients on this step's new states.

        Returns dy_t [B, E], dstates_prev (L tuples), dkeys [B, S, K] or 0.0,
        dderived (gradients on memory.derived) and the parameter gradients (a dict).
        """
        config, E, layer_masks, cell_caches, connection_cache, step_mask = cache
        cell, connection = self.cell, CONNECTIONS[config.attention]
        grads, dkeys, dderived = {}, 0.0, {}
        if config.input_feeding:
            dstates, (dfeed_next,) = dstates[:-1], dstates[-1]
            dfeature = dfeature + np.where(step_mask[:, None], dfeed_next, 0.0)  # (F1')
            dfeed_carried = np.where(step_mask[:, None], 0.0, dfeed_next)
        dcontext_out = dy_out = 0.0
        if connection.feeds_input and config.deep_output:
            H, K = config.hidden_dim, config.key_dim
            dfeature, dcontext_out, dy_out = dfeature[:, :H], dfeature[:, H:H + K], dfeature[:, H + K:]  # (A6')
        dx = dfeature
        if not connection.feeds_input:
            dqueries, dkeys, dderived, grads = connection.output_backward(dfeature[:, None], connection_cache)
            dx = dqueries[:, 0]
        dstates_prev = [None] * config.num_layers
        for layer in reversed(range(config.num_layers)):
            dstate = dstates[layer]
            dx, dstates_prev[layer], dp = cell.step_backward((dstate[0] + dx, *dstate[1:]), cell_caches[layer])
            dx = dropout_backward(dx, layer_masks[layer])
            grads.update({f"decoder/l{layer}/{suffix}": value for suffix, value in dp.items()})
        dy = dx
        if config.input_feeding:
            dy = dx[:, :E]
            dstates_prev.append((dx[:, E:] + dfeed_carried,))  # (F1')
        if connection.feeds_input:
            dy, dcontext = dx[:, :E], dx[:, E:] + dcontext_out  # (A5'), (A6')
            dquery, dkeys, dderived, connection_grads = connection.context_backward(dcontext, connection_cache)
            grads.update(connection_grads)
            top = dstates_prev[-1]
            dstates_prev[-1] = (top[0] + dquery, *top[1:])
        return dy + dy_out, dstates_prev, dkeys, dderived, grads


    def forward(self, y, tgt_lengths, init_states, keys, src_mask, params, config, dropout_masks, segments=None):
        """The decoder over a teacher-forced target.

        y: [B, T, E] embedded tgt_in; tgt_lengths: int[B]; init_states: L state tuples
        keys: [B, S, K]; src_mask: bool[B, S]; dropout_masks: dict (may be empty)
        Returns features [B, T, F], alpha [B, T, S] (None without weights) and the cache.
        """
        cell, connection = self.cell, CONNECTIONS[config.attention]
        T = y.shape[1]
        layer_masks = [dropout_masks.get(f"decoder/l{layer}") for layer in range(config.num_layers)]
        memory = self.memory(keys, src_mask, params, config)
        if connection.feeds_input or config.input_feeding:  # a step's input depends on the step before
            step_masks = np.arange(T)[None, :] < tgt_lengths[:, None]
            states, step_caches, features, alphas = init_states, [], [], []
            for t in range(T):
                masks_t = [None if m is None else m[:, t] for m in layer_masks]
                feature, states, alpha, step_cache = self.step_forward(
                    y[:, t], states, memory, step_masks[:, t], params, config, masks_t
                )
                features.append(feature)
                alphas.append(alpha)
                step_caches.append(step_cache)
            alpha = None if alphas[0] is None else np.stack(alphas, 1)
            return np.stack(features, 1), alpha, ("steps", config, memory, params, step_caches)
        inputs, cell_caches = y, []
        for layer in range(config.num_layers):
            inputs = dropout_forward(inputs, layer_masks[layer])
            inputs, _, cell_cache = cell.forward(inputs, init_states[layer],
                                                 layer_params(params, f"decoder/l{layer}", cell), tgt_lengths)
            cell_caches.append(cell_cache)
        features, alpha, connection_cache = connection.output_forward(inputs, memory, params, config)
        return features, alpha, ("parallel", config, memory, params, layer_masks, cell_caches, connection_cache)


    def head_weights(self, alpha, cache):
        """[B, 1, heads, T, S]: a multi-head connection's every head (from its caches), else alpha [B, T, S] as
        one head; None without weights."""
        kind, config = cache[0], cache[1]
        connection = CONNECTIONS[config.attention]
        if alpha is None or not connection.uses_heads:
            return super().head_weights(alpha, cache)
        if kind == "parallel":
            return connection.head_weights(cache[-1])[:, None]
        steps = [connection.head_weights(step_cache[4]) for step_cache in cache[-1]]  # each [B, heads, 1, S]
        return np.concatenate(steps, axis=2)[:, None]

    def backward(self, dfeatures, cache):
        """dfeatures: [B, T, F].

        Returns dy [B, T, E], dinit_states (L state tuples), dkeys [B, S, K] and
        the parameter gradients (a dict).
        """
        config, memory, params = cache[1], cache[2], cache[3]
        cell, connection = self.cell, CONNECTIONS[config.attention]
        B, H = dfeatures.shape[0], config.hidden_dim
        zero_state = tuple(np.zeros((B, H), dfeatures.dtype) for _ in cell.state_names)
        grads, dkeys, dderived = {}, np.zeros_like(memory.keys), {}
        if cache[0] == "steps":
            step_caches = cache[4]
            dys, dstates = [], [zero_state] * config.num_layers
            if config.input_feeding:
                dstates = dstates + [(np.zeros((B, config.output_dim), dfeatures.dtype),)]
            for t in reversed(range(len(step_caches))):
                dy_t, dstates, dkeys_t, dderived_t, step_grads = self.step_backward(
                    dfeatures[:, t], dstates, step_caches[t]
                )
                dys.append(dy_t)
                dkeys = dkeys + dkeys_t
                _add(dderived, dderived_t)
                _add(grads, step_grads)
            dy = np.stack(dys[::-1], 1)
        else:
            layer_masks, cell_caches, connection_cache = cache[4:]
            dhs, dkeys_output, dderived, grads = connection.output_backward(dfeatures, connection_cache)
            dkeys = dkeys + dkeys_output
            grads = dict(grads)
            dstates = [None] * config.num_layers
            for layer in reversed(range(config.num_layers)):
                dx, dstates[layer], dp = cell.backward(dhs, zero_state, cell_caches[layer])
                grads.update({f"decoder/l{layer}/{suffix}": value for suffix, value in dp.items()})
                dhs = dropout_backward(dx, layer_masks[layer])
            dy = dhs
        dkeys, memory_grads = self.memory_backward(dkeys, dderived, memory, params, config)
        grads.update(memory_grads)
        return dy, dstates, dkeys, grads

    def matmul_flops(self, config, batch, src_len, tgt_len, decoding=False):
        """T steps of each layer, and the connection's work."""
        connection = CONNECTIONS[config.attention]
        feed = config.output_dim if config.input_feeding else 0
        first = config.embed_dim + connection.input_dim(config) + feed
        cells = sum(tgt_len * cell_step_flops(self.cell, batch, first if layer == 0 else config.hidden_dim,
                                              config.hidden_dim) for layer in range(config.num_layers))
        return cells + connection.matmul_flops(config, batch, src_len, tgt_len)
