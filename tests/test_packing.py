"""Packed batches (MATH.md (T14)): several sentences per row, each attending to itself only, positions restarting,
compute exactly what the same sentences compute one per row, in both backends; and the training plan that packs
them into batches of one shape."""
import dataclasses
import json

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import seq2seq_jax  # noqa: E402
from seq2seq_lab.batching import BatchPlan, EncodedPairs, pack_rows  # noqa: E402
from seq2seq_lab.cli import main  # noqa: E402
from seq2seq_ref import ModelConfig, loss_and_grads, make_batch  # noqa: E402
from seq2seq_ref.batch import make_packed_batch  # noqa: E402
from seq2seq_ref.gradcheck import DEFAULT_THRESHOLD, check_tensors  # noqa: E402
from seq2seq_ref.model import forward  # noqa: E402
from seq2seq_ref.transformer_layers import segment_positions  # noqa: E402
from tests.helpers import float64_params  # noqa: E402

CONFIG = ModelConfig(11, 12, 8, 8, encoder="transformer", decoder="transformer", attention="multihead",
                     num_heads=2, num_layers=2)


@st.composite
def packings(draw):
    """Pairs of random lengths, split into rows of 1-3 pairs each."""
    n = draw(st.integers(2, 7))
    src = [draw(st.lists(st.integers(3, 10), min_size=1, max_size=5)) for _ in range(n)]
    tgt = [draw(st.lists(st.integers(3, 11), min_size=0, max_size=4)) for _ in range(n)]
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=n - 1))))
    bounds = [0, *cuts, n]
    rows = [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]
    return src, tgt, rows


def packed_and_unpacked(src, tgt, rows, extra=0):
    width = max(max(sum(len(src[i]) for i in row), sum(len(tgt[i]) + 1 for i in row)) for row in rows) + extra
    packed = make_packed_batch([[src[i] for i in row] for row in rows], [[tgt[i] for i in row] for row in rows],
                               CONFIG, width, width)
    return packed, make_batch(src, tgt, CONFIG)


@settings(max_examples=8, deadline=None)
@given(problem=packings(), extra=st.integers(0, 2))
def test_a_packed_batch_computes_what_its_sentences_compute_one_per_row(problem, extra):
    packed, unpacked = packed_and_unpacked(*problem, extra=extra)
    params = float64_params(CONFIG)
    loss, grads = loss_and_grads(params, CONFIG, unpacked)
    packed_loss, packed_grads = loss_and_grads(params, CONFIG, packed)
    assert abs(packed_loss - loss) <= 1e-12 * abs(loss)
    for name in grads:
        np.testing.assert_allclose(packed_grads[name], grads[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_the_jax_twin_computes_a_packed_batch_as_the_reference():
    src, tgt, rows = [[3, 4, 5], [6], [7, 8], [9, 10, 3, 4], [5, 5]], [[4, 5], [6, 7, 8], [], [9], [3]], \
        [[0, 1], [2, 3, 4]]
    config = dataclasses.replace(CONFIG, num_layers=1)
    packed, unpacked = packed_and_unpacked(src, tgt, rows, extra=2)
    params = float64_params(config)
    loss, grads = loss_and_grads(params, config, packed)
    for batch in (packed, unpacked):
        jax_loss, jax_grads = seq2seq_jax.loss_and_grads(params, config, batch)
        assert abs(float(jax_loss) - loss) <= 1e-12 * abs(loss)
        for name in grads:
            np.testing.assert_allclose(np.asarray(jax_grads[name]), grads[name], rtol=1e-12, atol=1e-12,
                                       err_msg=name)


def test_each_sentence_of_a_packed_row_is_independent_of_its_neighbours():
    # the loss of a row's second sentence does not change with its first: only the first's own tokens move it
    src, tgt = [[3, 4, 5], [6, 7]], [[4, 5], [6, 8]]
    params = float64_params(CONFIG)
    one = make_packed_batch([[[9, 9, 9, 9], src[1]]], [[[10], tgt[1]]], CONFIG, 8, 8)
    two = make_packed_batch([[src[0], src[1]]], [[tgt[0], tgt[1]]], CONFIG, 8, 8)
    tokens_first = (make_batch([[9, 9, 9, 9]], [[10]], CONFIG), make_batch([src[0]], [tgt[0]], CONFIG))
    second = make_batch([src[1]], [tgt[1]], CONFIG)
    n_second = len(tgt[1]) + 1
    for packed, first in zip((one, two), tokens_first):
        n_first = int(first.tgt_lengths.sum())
        total = loss_and_grads(params, CONFIG, packed)[0] * (n_first + n_second)
        alone = loss_and_grads(params, CONFIG, first)[0] * n_first + loss_and_grads(params, CONFIG, second)[0] * n_second
        assert abs(total - alone) <= 1e-12 * abs(total)


def test_a_packed_batch_passes_finite_differences():
    src, tgt, rows = [[3, 4, 5], [6], [7, 8], [9, 10, 3, 4]], [[4, 5], [6, 7, 8], [], [9]], [[0, 1], [2, 3]]
    config = dataclasses.replace(CONFIG, num_layers=1)
    width = 9
    packed = make_packed_batch([[src[i] for i in row] for row in rows], [[tgt[i] for i in row] for row in rows],
                               config, width, width)
    params = float64_params(config)
    _, grads = loss_and_grads(params, config, packed)
    checks = check_tensors(lambda: forward(params, config, packed)[0], params, grads, max_entries=3)
    assert max(c.max_rel_error for c in checks) <= DEFAULT_THRESHOLD


def test_positions_restart_in_every_sentence():
    segments = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert segment_positions(segments).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1], list(range(8))]
    assert np.asarray(seq2seq_jax.transformer_layers.segment_positions(segments)).tolist() == \
        segment_positions(segments).tolist()


@pytest.mark.parametrize("change,match", [
    (dict(tgt_segments=None), r"tgt_segments: expected segment ids with the other side's"),
    (dict(src_segments=np.array([[1, 2, 1, 0, 0, 0]])), r"src_segments\[0\]: expected 1, 2, \.\.\. in order"),
    (dict(src_segments=np.array([[1, 1, 1, 1, 0, 1]])), r"src_segments\[0\]: expected 1, 2, \.\.\. in order"),
    (dict(src_segments=np.array([[1, 1, 1, 1, 1, 0]])), r"tgt_segments\[0\]: expected as many sentences as "
                                                         r"src_segments\[0\] \(1\), got 2"),
    (dict(src_segments=np.array([[1, 1, 2, 2, 2]])), r"src_segments: expected the shape of its tokens"),
])
def test_bad_segment_ids_are_refused(change, match):
    packed = make_packed_batch([[[3, 4], [5, 6, 7]]], [[[4], [5]]], CONFIG, 6, 6)
    with pytest.raises(ValueError, match=match):
        loss_and_grads(float64_params(CONFIG), CONFIG, packed._replace(**change))


def test_a_recurrent_model_refuses_a_packed_batch():
    config = ModelConfig(11, 12, 8, 8)
    packed = make_packed_batch([[[3, 4], [5, 6, 7]]], [[[4], [5]]], CONFIG, 6, 6)
    with pytest.raises(ValueError, match=r"batch: expected no segment ids with encoder='lstm' and decoder='lstm' "
                                         r"\(packed batches need stacks that pack: \['transformer'\]\)"):
        loss_and_grads(float64_params(config), config, packed)


def test_the_packing_plan_uses_each_pair_once_in_batches_of_one_shape():
    rng = np.random.default_rng(0)
    src = [list(rng.integers(3, 11, size=rng.integers(1, 9))) for _ in range(300)]
    tgt = [list(rng.integers(3, 12, size=rng.integers(0, 8))) for _ in range(300)]
    data = EncodedPairs(src, tgt, [("", "")] * 300)
    batches = pack_rows(data, rng.permutation(300), rows=6, width=16)
    used = [i for batch in batches for row in batch for i in row]
    assert len(used) == len(set(used)) and len(used) > 0.9 * 300
    assert all(len(batch) == 6 and all(batch) for batch in batches)
    assert all(sum(len(src[i]) for i in row) <= 16 and sum(len(tgt[i]) + 1 for i in row) <= 16
               for batch in batches for row in batch)
    plan = BatchPlan(data, CONFIG, batch_size=24, seed=3, pad_multiple=4, pack=16)
    shapes = {(plan.batch(step).src.shape, plan.batch(step).tgt_in.shape) for step in range(0, 60, 7)}
    assert shapes == {((plan.rows, 16), (plan.rows, 16))}
    # a step's batch is a function of (seed, step): a fresh plan (a resumed run) finds the same one
    again = BatchPlan(data, CONFIG, batch_size=24, seed=3, pad_multiple=4, pack=16)
    assert all(np.array_equal(plan.batch(s).src, again.batch(s).src) for s in (0, 29, 58))
    epoch, offset = again.locate(plan.batches_per_epoch + 1)
    assert (epoch, offset) == (1, 1)
    with pytest.raises(ValueError, match=r"pack: expected a row width of at least the longest training sentence "
                                         r"\(8 tokens"):
        BatchPlan(data, CONFIG, batch_size=24, seed=3, pad_multiple=4, pack=7)


def test_train_packs_a_transformer_and_refuses_to_pack_a_recurrent_model(tmp_path, capsys):
    common = ["train", "--task", "reverse", "--train-size", "200", "--steps", "4", "--batch-size", "16",
              "--hidden-dim", "8", "--no-progress", "--eval-every", "4", "--backend", "numpy"]
    assert main([*common, "--encoder", "transformer", "--decoder", "transformer", "--heads", "2", "--pack", "24",
                 "--out", str(tmp_path / "packed")]) == 0
    summary = json.loads((tmp_path / "packed" / "summary.json").read_text())
    # the time split of the run: one batch shape, so one compilation, inside the training time
    assert summary["batch_shapes"] == 1 and 0 < summary["new_shape_step_seconds"] <= summary["train_seconds"]
    assert summary["startup_seconds"] > 0 and summary["test_seconds"] >= 0
    assert (summary["startup_seconds"] + summary["train_seconds"] + summary["validation_seconds"]
            + summary["test_seconds"] <= summary["total_seconds"])
    assert main([*common, "--pack", "24", "--out", str(tmp_path / "lstm")]) == 2
    assert "pack: expected none with encoder='lstm' and decoder='lstm'" in capsys.readouterr().err
