"""`seq2seq gradcheck`: finite differences against the hand-written gradients, per tensor."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys

from seq2seq_ref import ModelConfig
from seq2seq_ref.config import TIE_EMBEDDINGS
from seq2seq_ref.registry import CONNECTIONS, DECODERS, ENCODERS
from seq2seq_ref.gradcheck import (
    DEFAULT_STENCIL, DEFAULT_STEP, DEFAULT_THRESHOLD, DEFAULT_TINY, STENCILS, gradcheck_model,
)

# Small on purpose: every entry of most tensors is checked; vocabularies differ so no shape is ambiguous.
# ffn_dim 8 (not 4 x 6): fewer relu inputs, so fewer stencils cross a kink (MATH.md (C3)); recurrent sides ignore it
GRADCHECK_SIZES = dict(src_vocab_size=7, tgt_vocab_size=8, embed_dim=4, hidden_dim=6, ffn_dim=8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", choices=(*ENCODERS, "all"), default="all", help="encoder stack to check")
    parser.add_argument("--decoder", choices=(*DECODERS, "all"), default="all", help="decoder stack to check")
    parser.add_argument("--attention", choices=(*CONNECTIONS, "all"), default="all",
                        help="connection to check")
    parser.add_argument("--heads", type=int, default=2, help="heads of multi-head attention (must divide 6)")
    parser.add_argument("--paper-options", action="store_true",
                        help="also check each connection with its paper option: bahdanau's deep output, "
                             "input feeding for the others")
    parser.add_argument("--tie-embeddings", choices=TIE_EMBEDDINGS, default="none",
                        help="check tied embeddings (MATH.md (W1')): embed_dim becomes hidden_dim, and with 'all' "
                             "both vocabularies have tgt_vocab_size entries")
    parser.add_argument("--layers", type=int, choices=(1, 2, 3), default=None,
                        help="stacked layers (default: 1 and 2)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--bidirectional", action="store_true", help="only the bidirectional encoder")
    direction.add_argument("--unidirectional", action="store_true", help="only the unidirectional encoder")
    parser.add_argument("--seed", type=int, default=0, help="seeds the parameters, the batch and the sampled entries")
    parser.add_argument("--max-entries", type=int, default=8,
                        help="entries checked per tensor; larger tensors are a seeded sample")
    parser.add_argument("--step", type=float, default=DEFAULT_STEP, help="h, the finite-difference step")
    parser.add_argument("--stencil", type=int, choices=sorted(STENCILS), default=DEFAULT_STENCIL,
                        help="order of the central stencil")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="fail (exit status 1) above this max relative error")
    parser.add_argument("--against", choices=("jax",), default=None,
                        help="also compare the hand-written gradients with JAX autodiff")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def configs(args) -> list[ModelConfig]:
    """Every (encoder, decoder, connection) asked for, at every layer count and direction asked for."""
    pick = lambda value, every: every if value == "all" else (value,)  # noqa: E731
    layers = (1, 2) if args.layers is None else (args.layers,)
    directions = (True,) if args.bidirectional else (False,) if args.unidirectional else (False, True)
    found, refused = [], None
    for enc, dec, att, n, bi in itertools.product(pick(args.encoder, ENCODERS), pick(args.decoder, DECODERS),
                                                  pick(args.attention, tuple(CONNECTIONS)), layers, directions):
        encoder, decoder, connection = ENCODERS[enc], DECODERS[dec], CONNECTIONS[att]
        heads = args.heads if connection.uses_heads or encoder.uses_heads or decoder.uses_heads else 1
        sizes = dict(GRADCHECK_SIZES)
        # a stack of one width (the Transformer) has d = embed = hidden; a tied output layer's width is the
        # embedding's (W1)
        if encoder.one_width or decoder.one_width or args.tie_embeddings != "none":
            sizes["embed_dim"] = sizes["hidden_dim"]
        if args.tie_embeddings == "all":
            sizes["src_vocab_size"] = sizes["tgt_vocab_size"]
        try:
            config = ModelConfig(**sizes, num_layers=n, bidirectional=bi, attention=att, encoder=enc,
                                 decoder=dec, num_heads=heads, tie_embeddings=args.tie_embeddings)
        except ValueError as error:
            # a combination that a stack refuses (a bidirectional Transformer encoder, a Transformer decoder
            # with another connection) is left out of a sweep; if nothing is left, the last refusal is the error.
            # Anything else (heads that do not divide the width) is the user's to fix.
            if str(error).split(":")[0] not in ("bidirectional", "attention"):
                raise
            refused = error
            continue
        found.append(config)
        # the options belong to the connections; the deep output (bahdanau's) is wider than a tied embedding
        deep_output_untieable = connection.feeds_input and args.tie_embeddings != "none"
        if args.paper_options and decoder.uses_connection and not deep_output_untieable:
            found.append(paper_variant(config))
    if not found:
        raise refused
    return found


def paper_variant(config: ModelConfig) -> ModelConfig:
    """The connection's option from its paper: the deep output where the context feeds the input, else
    input feeding."""
    if CONNECTIONS[config.attention].feeds_input:
        return dataclasses.replace(config, output_from="state+context+input")
    return dataclasses.replace(config, input_feeding=True)


def run(args) -> int:
    # bad input is status 2 (an `error:` line from cli.main) before any check, never 1: that says a check failed
    for name, least in (("max_entries", 1), ("heads", 1), ("seed", 0)):
        if getattr(args, name) < least:
            raise ValueError(f"{name}: expected an int >= {least}, got {getattr(args, name)}")
    for name in ("step", "threshold"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise ValueError(f"{name}: expected a finite number > 0, got {getattr(args, name)}")
    records = []
    for config in configs(args):
        checks = gradcheck_model(config, args.seed, args.max_entries, args.step, args.stencil)
        against = {}
        if args.against == "jax":
            from seq2seq_jax.gradcheck import compare_with_autodiff

            against = compare_with_autodiff(config, args.seed)
        for check in checks:
            record = {"encoder": config.encoder, "decoder": config.decoder, "attention": config.attention,
                      "num_heads": config.num_heads, "output_from": config.output_from,
                      "input_feeding": config.input_feeding, "tie_embeddings": config.tie_embeddings,
                      "num_layers": config.num_layers,
                      "bidirectional": config.bidirectional, **check.as_record()}
            if check.name in against:
                record.update(against[check.name])
            record["passed"] = check.max_rel_error <= args.threshold and record.get("autodiff_passed", True)
            records.append(record)
    passed = all(r["passed"] for r in records)
    settings = {"dtype": "float64", "stencil": args.stencil, "step": args.step, "tiny": DEFAULT_TINY,
                "threshold": args.threshold, "seed": args.seed, "max_entries": args.max_entries,
                "sizes": GRADCHECK_SIZES}
    if args.json:
        json.dump({"settings": settings, "passed": passed, "records": records}, sys.stdout, indent=1)
        print()
    else:
        print_table(records, settings, passed)
    return 0 if passed else 1


def print_table(records, settings, passed) -> None:
    print(f"finite differences (order-{settings['stencil']} central, h={settings['step']}, float64) "
          f"vs hand-written backprop; threshold {settings['threshold']:.0e}")
    has_jax = any("autodiff_max_rel_error" in r for r in records)
    header = f"{'config':<34} {'tensor':<22} {'shape':<10} {'entries':>7} {'max rel err':>12}"
    print(header + (f" {'vs autodiff':>12}" if has_jax else "") + "  ok")
    for r in records:
        option = "+deep" if r["output_from"] != "state" else "+feed" if r["input_feeding"] else ""
        option += {"none": "", "target": "+tie", "all": "+tieall"}[r.get("tie_embeddings", "none")]
        config = f"{r['encoder']}/{r['decoder']}/{r['attention']}{option} L{r['num_layers']} " \
                 f"{'bi' if r['bidirectional'] else 'uni'}"
        shape = "x".join(map(str, r["shape"]))
        line = f"{config:<34} {r['name']:<22} {shape:<10} {r['entries_checked']:>7} {r['max_rel_error']:>12.2e}"
        if has_jax:
            line += f" {r['autodiff_max_rel_error']:>12.2e}"
        print(line + ("  ok" if r["passed"] else "  FAIL"))
    worst = max(records, key=lambda r: r["max_rel_error"])
    print(f"worst: {worst['max_rel_error']:.2e} ({worst['name']}, {worst['encoder']}/{worst['decoder']}/"
          f"{worst['attention']} L{worst['num_layers']}) "
          f"-> {'PASSED' if passed else 'FAILED'}")
