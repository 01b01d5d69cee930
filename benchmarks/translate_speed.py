"""Translation speed and quality of one trained run on every engine, side by side (benchmarks/README.md).

    python benchmarks/translate_speed.py --run /work/models/m30k --checkpoint last \
        --src /work/models/data/val.de --ref /work/models/data/val.en --json benchmarks/results/translate_speed_cpu.json

Engines: numpy (the reference) and jax (the twin), through seq2seq_lab.load(...).decode(...); torch (the
baseline of seq2seq_lab/bench/torch_model.py on the same weights, cached incremental decoding); CTranslate2
on the run exported by seq2seq_lab.export, computing in float32 and in int8 (skipped, with a note, where the
export module or the ctranslate2 package is missing, or the model is not a Transformer).  For greedy decoding,
beam search with the exact stop (N2) and beam search with the early stop (N4; CTranslate2's only rule, so it
runs that mode alone), each engine translates the whole source list once cold (the first call: JAX compiles there) and then
--repeats times warm; reported are the warm median's wall seconds (model load excluded), load + first call,
target tokens/s and sentences/s, BLEU (sacrebleu on the detokenised outputs, as `seq2seq evaluate` scores:
13a, or char for char-level targets, each distinct source once against all its references) and the share of
lines identical to the JAX twin's output.  torch and CTranslate2 decode the sources longest first in batches of
--batch-tokens source tokens, as the library's translate() does with its default.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the package of the tree this script is in, whatever else is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENGINES = ("numpy", "jax", "torch", "ct2-float32", "ct2-int8")
MODES = ("greedy", "beam", "beam-early")


# how each engine ends a sentence's beam search: our exact bound (N2), or once beam hypotheses finished (N4);
# CTranslate2 has only the latter (patience 1), whichever mode it is asked for
STOPS = {"greedy": "EOS", "beam": "exact (N2)", "beam-early": "early (N4)", "ct2-float32": "early (CTranslate2)",
         "ct2-int8": "early (CTranslate2)"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the trained run's folder")
    parser.add_argument("--checkpoint", default="best", help="best, last, averaged, or a checkpoint file")
    parser.add_argument("--src", required=True, help="source sentences, one a line")
    parser.add_argument("--ref", required=True, help="their reference translations, one a line")
    parser.add_argument("--limit", type=int, help="the first N lines only")
    parser.add_argument("--numpy-limit", type=int, default=100,
                        help="the first N lines only for the NumPy reference (slow at beam 5); its BLEU and "
                             "agreement are on those lines")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {ENGINES}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {MODES}")
    parser.add_argument("--beam", type=int, default=5, help="beam size of the beam mode")
    parser.add_argument("--length-penalty", type=float, default=1.4,
                        help="alpha of beam search's length normalisation (CTranslate2: |y| ** alpha, ours and "
                             "torch's: ((5 + |y|) / 6) ** alpha)")
    parser.add_argument("--repeats", type=int, default=1, help="warm runs after the cold one (their median)")
    parser.add_argument("--threads", type=int, default=2, help="torch and CTranslate2 intra-op threads")
    parser.add_argument("--batch-tokens", type=int, default=4096,
                        help="source tokens per batch for torch and CTranslate2")
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--keep-outputs", action="store_true", help="with --json: each record's output lines too")
    args = parser.parse_args(argv)
    args.engines = _names(args.engines, ENGINES, "engines")
    args.modes = _names(args.modes, MODES, "modes")
    for name in ("limit", "numpy_limit", "beam", "repeats", "threads", "batch_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"{name}: expected an int >= 1, got {value}")
    if not math.isfinite(args.length_penalty) or args.length_penalty < 0:
        parser.error(f"length_penalty: expected a finite float >= 0, got {args.length_penalty}")
    return args


def _names(text, choices, what):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in choices for n in names):
        sys.exit(f"error: {what}: expected a comma-separated list of {choices}, got {text!r}")
    return names


def read_lines(path, limit):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return lines[:limit] if limit else lines


def length_sorted_batches(lengths, batch_tokens):
    """Indices, longest first, in batches of at most batch_tokens padded source tokens (one row at least)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        rows = max(1, batch_tokens // max(lengths[order[start]], 1))
        batches.append(order[start:start + rows])
        start += rows
    return batches


class Prepared:
    """What every engine reads the way the run does: source ids (lowercased where the run was), the vocabularies."""

    def __init__(self, translator):
        self.translator = translator
        self.max_len = translator.max_len
        self.src_vocab, self.tgt_vocab = translator.src_vocab, translator.tgt_vocab

    def source_ids(self, texts):
        lowercase = self.translator.data.lowercase
        return [self.src_vocab.encode(t.lower().strip() if lowercase else t.strip()) if t.strip() else []
                for t in texts]

    def output(self, ids):
        """(text, target tokens without <eos>) of output ids (cut at the first <eos>)."""
        from seq2seq_lab.vocab import EOS_ID

        ids = list(ids)
        ids = ids[: ids.index(EOS_ID)] if EOS_ID in ids else ids
        return self.tgt_vocab.decode(ids), len(ids)


def library_engine(backend, args):
    import seq2seq_lab

    translator = seq2seq_lab.load(args.run, args.checkpoint, backend=backend)

    def translate(texts, beam, early_stop):
        results = translator.decode(texts, beam=beam, length_penalty=args.length_penalty, early_stop=early_stop)
        return [(r.text, len([t for t in r.hypotheses[0].tokens if t != "<eos>"]) if r.hypotheses else 0)
                for r in results]
    return translate


def torch_engine(prepared, args):
    import torch

    from seq2seq_lab.bench.torch_model import TorchSeq2Seq
    from seq2seq_lab.checkpoint import load_checkpoint
    from seq2seq_lab.vocab import PAD_ID
    from seq2seq_ref.batch import pad_sequences

    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(prepared.translator.checkpoint_path)
    model = TorchSeq2Seq(checkpoint.config).load_flat(checkpoint.params).float().eval()

    def translate(texts, beam, early_stop):
        sources, outputs = prepared.source_ids(texts), [("", 0)] * len(texts)
        rows = [i for i, ids in enumerate(sources) if ids]
        for batch in length_sorted_batches([len(sources[i]) for i in rows], args.batch_tokens):
            indices = [rows[i] for i in batch]
            src = torch.as_tensor(pad_sequences([sources[i] for i in indices], PAD_ID))
            lengths = torch.as_tensor([len(sources[i]) for i in indices])
            if beam > 1:
                tokens = model.beam_search(src, lengths, beam, prepared.max_len, args.length_penalty,
                                           early_stop)[0][:, 0]
            else:
                tokens = model.greedy(src, prepared.max_len, lengths).numpy()
            for i, ids in zip(indices, tokens):
                outputs[i] = prepared.output(ids)
        return outputs
    return translate


def ct2_engine(prepared, args, compute_type, exported):
    import ctranslate2

    translator = ctranslate2.Translator(str(exported), device="cpu", compute_type=compute_type,
                                        intra_threads=args.threads, inter_threads=1)
    src_tokens = prepared.src_vocab.tokens
    tgt_ids = {token: i for i, token in enumerate(prepared.tgt_vocab.tokens)}

    def translate(texts, beam, early_stop):  # its own stopping rule, whatever early_stop says
        sources, outputs = prepared.source_ids(texts), [("", 0)] * len(texts)
        rows = [i for i, ids in enumerate(sources) if ids]
        results = translator.translate_batch([[src_tokens[j] for j in sources[i]] for i in rows],
                                             beam_size=beam, length_penalty=args.length_penalty,
                                             max_decoding_length=prepared.max_len, min_decoding_length=0,
                                             max_batch_size=args.batch_tokens, batch_type="tokens")
        for i, result in zip(rows, results):
            outputs[i] = prepared.output(tgt_ids[token] for token in result.hypotheses[0])
        return outputs
    return translate


def ct2_unavailable(prepared) -> str | None:
    """Why CTranslate2 cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("ctranslate2") is None:
        return "the ctranslate2 package is not installed"
    if importlib.util.find_spec("seq2seq_lab.export") is None:
        return "seq2seq_lab.export (seq2seq export) is not in this version"
    from seq2seq_lab.export import check_exportable

    try:
        check_exportable(prepared.translator.config)
    except ValueError as error:
        return str(error)
    return None


def bleu_of(outputs, sources, references, tgt_tokenizer):
    from sacrebleu.metrics import BLEU

    from seq2seq_lab.evaluate import references_by_source

    rows, streams = references_by_source(list(zip(sources, references)))
    bleu = BLEU(tokenize="char" if tgt_tokenizer == "char" else None)
    return bleu.corpus_score([outputs[row] for row in rows], streams).score


def measure(name, make, texts, references, modes, args, tgt_tokenizer, load_extra=0.0):
    """One engine: its load time, then per mode a cold call and args.repeats warm calls (numpy: the cold one)."""
    start = time.perf_counter()
    translate = make()
    load_s = time.perf_counter() - start + load_extra
    records = []
    for mode in modes:
        beam, early_stop = (1, False) if mode == "greedy" else (args.beam, mode == "beam-early")
        start = time.perf_counter()
        outputs = translate(texts, beam, early_stop)
        first_s = time.perf_counter() - start
        warm = []
        for _ in range(0 if name == "numpy" else args.repeats):
            start = time.perf_counter()
            outputs = translate(texts, beam, early_stop)
            warm.append(time.perf_counter() - start)
        seconds = statistics.median(warm) if warm else first_s
        tokens = sum(n for _, n in outputs)
        records.append({
            "engine": name, "mode": mode, "beam": beam, "stop": STOPS[name if name.startswith("ct2") else mode],
            "length_penalty": args.length_penalty if beam > 1 else None, "sentences": len(texts),
            "seconds": seconds, "warm_seconds": warm, "first_call_s": first_s, "load_s": load_s,
            "load_and_first_call_s": load_s + first_s, "target_tokens": tokens, "target_tokens_per_s": tokens / seconds,
            "sentences_per_s": len(texts) / seconds,
            "bleu": bleu_of([text for text, _ in outputs], texts, references, tgt_tokenizer),
            "outputs": [text for text, _ in outputs]})
        print(f"{name} {mode}: {seconds:.2f} s warm, {first_s:.2f} s first, load {load_s:.2f} s, "
              f"BLEU {records[-1]['bleu']:.2f}", file=sys.stderr, flush=True)
    return records


def add_agreement(records):
    """identical_to_jax: % of lines equal to the JAX twin's output of the same mode (on the engine's lines)."""
    jax = {r["mode"]: r["outputs"] for r in records if r["engine"] == "jax"}
    for r in records:
        theirs = jax.get(r["mode"])
        r["identical_to_jax_percent"] = None if theirs is None else \
            100 * float(np.mean([a == b for a, b in zip(r["outputs"], theirs)]))


def table(report) -> str:
    lines = ["| engine | decoding | sentences | wall s (warm) | load + first call s | target tokens/s | sentences/s "
             "| BLEU | identical to JAX |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["records"]:
        mode = "greedy" if r["beam"] == 1 else f"beam {r['beam']}, lp {r['length_penalty']}, stop {r['stop']}"
        same = "-" if r["identical_to_jax_percent"] is None else f"{r['identical_to_jax_percent']:.1f} %"
        lines.append(f"| {r['engine']} | {mode} | {r['sentences']} | {r['seconds']:.2f} | "
                     f"{r['load_and_first_call_s']:.2f} | {r['target_tokens_per_s']:.0f} | {r['sentences_per_s']:.1f} "
                     f"| {r['bleu']:.2f} | {same} |")
    return "\n".join(lines + [f"\nskipped: {s}" for s in report["skipped"]])


def main(argv=None) -> int:
    args = parse_args(argv)
    import seq2seq_lab
    from seq2seq_lab.bench.harness import describe_device, versions

    texts, references = read_lines(args.src, args.limit), read_lines(args.ref, args.limit)
    if len(texts) != len(references):
        sys.exit(f"error: ref: expected {len(texts)} lines as in {args.src}, got {len(references)}")
    prepared = Prepared(seq2seq_lab.load(args.run, args.checkpoint, backend="numpy"))
    tokenizer = prepared.tgt_vocab.tokenizer
    records, skipped, load_before = [], [], os.getloadavg()
    for engine in args.engines:
        if engine in ("numpy", "jax"):
            n = min(len(texts), args.numpy_limit) if engine == "numpy" else len(texts)
            records += measure(engine, lambda: library_engine(engine, args), texts[:n], references[:n], args.modes,
                               args, tokenizer)
        elif engine == "torch":
            records += measure(engine, lambda: torch_engine(prepared, args), texts, references, args.modes, args,
                               tokenizer)
        else:
            reason = ct2_unavailable(prepared)
            if reason:
                skipped.append(f"{engine}: {reason}")
                continue
            from seq2seq_lab.export import export_ctranslate2

            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                exported = export_ctranslate2(prepared.translator, Path(folder) / "model")
                export_s = time.perf_counter() - start
                compute_type = engine.split("-", 1)[1]
                modes = [mode for mode in args.modes if mode != "beam"]  # it has no exact stop
                measured = measure(engine, lambda: ct2_engine(prepared, args, compute_type, exported), texts,
                                   references, modes, args, tokenizer)
            records += [{**r, "export_s": export_s} for r in measured]
    add_agreement(records)
    report = {"command": " ".join(sys.argv), "run": args.run, "checkpoint": str(prepared.translator.checkpoint_path),
              "step": prepared.translator.step, "src": args.src, "ref": args.ref, "threads": args.threads,
              "batch_tokens": args.batch_tokens,
              "load_average_before_after": [load_before[0], os.getloadavg()[0]], "device": describe_device(), "versions": versions(),
              "skipped": skipped, "records": records}
    print(table(report))
    if args.json:
        if not args.keep_outputs:
            report["records"] = [{k: v for k, v in r.items() if k != "outputs"} for r in records]
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"records written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
