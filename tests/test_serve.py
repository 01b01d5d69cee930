"""`seq2seq serve`: the API over real HTTP on a loopback port (a server process per module), micro-batching of
concurrent requests, every bad input a 4xx naming its field, a graceful SIGTERM, and the page in headless
Chromium where one is installed."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import seq2seq_lab  # noqa: E402
from seq2seq_lab.backends import OptimiserSettings  # noqa: E402
from seq2seq_lab.data import DataSettings  # noqa: E402
from seq2seq_lab.serve import MicroBatcher, Options, ServeLimits  # noqa: E402
from seq2seq_lab.training import ModelOptions, RunSettings, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["march 3rd, 2016", "3/4/17", "april 1, 1999", "12 jan 2001", "friday, june 5, 2020", "7.8.09"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny dates model with two-headed attention (quality is beside the point: answers are compared, not
    judged)."""
    out = tmp_path_factory.mktemp("serve") / "run"
    train(out, ModelOptions(embed_dim=8, hidden_dim=16, attention="multihead", num_heads=2),
          DataSettings(task="dates", train_size=256), RunSettings(steps=6, batch_size=32, eval_every=6, eval_examples=16),
          OptimiserSettings(), "numpy", progress=False, evaluate_test=False, notify=lambda m: None)
    return out


def start_server(run_dir: Path, *options: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "seq2seq_lab.cli", "serve", "--run", str(run_dir),
                                "--port", "0", *options], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # the start-up line, once the server listens
    found = re.search(r"on (http://127\.0\.0\.1:\d+/) after ([\d.]+) s", line)
    if found is None:
        process.kill()
        raise AssertionError(f"no start-up line: {line!r}\n{process.stderr.read()}")
    return process, found.group(1)


@pytest.fixture(scope="module")
def server(run_dir):
    process, url = start_server(run_dir, "--max-wait-ms", "100", "--max-texts", "8", "--max-chars", "60",
                                "--max-pieces", "40", "--max-batch", "8")  # batches of 1 and 8: 4 warm-up shapes
    yield url
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == -signal.SIGTERM  # uvicorn's convention: the signal's status, after shutting down


def request(url: str, path: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    call = urllib.request.Request(url + path.lstrip("/"), data=data, method="GET" if data is None else "POST",
                                  headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_api_translates_as_the_python_api_does(server, run_dir):
    translator = seq2seq_lab.load(run_dir)
    status, answer = request(server, "/translate", {"text": SENTENCES[0]})
    assert status == 200 and answer["translations"][0]["translation"] == translator.translate(SENTENCES[0])
    status, answer = request(server, "/translate", {"texts": SENTENCES[:4] + [""], "beam": 3, "n_best": 3,
                                                    "return_scores": True, "return_attention": True,
                                                    "attention_heads": True})
    assert status == 200 and answer["beam"] == 3
    expected = translator.decode(SENTENCES[:4] + [""], beam=3, n_best=3, length_penalty=answer["length_penalty"])
    for result, translation in zip(answer["translations"], expected):
        assert result["translation"] == translation.text
        assert result["source_pieces"] == list(translation.source_tokens)
        assert [h["text"] for h in result["hypotheses"]] == [h.text for h in translation.hypotheses]
        np.testing.assert_allclose([h["score"] for h in result["hypotheses"]],
                                   [h.score for h in translation.hypotheses], rtol=1e-5)
        for hypothesis in result["hypotheses"]:
            weights, heads = np.array(hypothesis["attention"]), np.array(hypothesis["attention_heads"])
            assert weights.shape == (len(hypothesis["pieces"]), len(result["source_pieces"]))
            assert heads.shape == (1, 2, *weights.shape)  # [blocks, heads, output pieces, source pieces]
            np.testing.assert_allclose(heads.sum(axis=-1), 1.0, atol=1e-4)  # each step's weights: a distribution
            np.testing.assert_allclose(heads[-1].mean(axis=0), weights, atol=1e-5)
    assert answer["translations"][-1] == {"translation": "", "source": "", "source_pieces": [], "hypotheses": []}


def test_health_and_info_describe_the_model(server, run_dir):
    assert request(server, "/health") == (200, {"status": "ok"})
    status, info = request(server, "/info")
    translator = seq2seq_lab.load(run_dir)
    assert status == 200 and info["step"] == translator.step and info["checkpoint"] == str(translator.checkpoint_path)
    assert info["model"]["attention"] == "multihead" and info["src_vocab_size"] == len(translator.src_vocab)
    assert info["attention_layout"] == {"layers": 1, "heads": 2}
    assert info["decoding"] == translator.decoding.to_json() and info["limits"]["max_texts"] == 8
    assert info["version"] and info["startup_seconds"] > 0 and info["training"]["batch_size"] == 32


BAD = [
    (b"not json", 400, "body"),
    (b"[1, 2]", 400, "body"),
    (b"{}", 400, "text"),
    ({"text": "a", "texts": ["b"]}, 400, "text"),
    ({"text": 3}, 400, "text"),
    ({"texts": "3/4/17"}, 400, "texts"),
    ({"texts": []}, 400, "texts"),
    ({"texts": ["3/4/17", None]}, 400, "texts[1]"),
    ({"texts": ["3/4/17"] * 9}, 413, "texts"),
    ({"text": "1" * 61}, 413, "text"),
    ({"texts": ["ok", "1 " * 30]}, 413, "texts[1]"),
    ({"text": "3/4/17", "beam": 0}, 400, "beam"),
    ({"text": "3/4/17", "beam": 17}, 400, "beam"),
    ({"text": "3/4/17", "beam": "3"}, 400, "beam"),
    ({"text": "3/4/17", "beam": True}, 400, "beam"),
    ({"text": "3/4/17", "beam": 2, "n_best": 3}, 400, "n_best"),
    ({"text": "3/4/17", "length_penalty": "x"}, 400, "length_penalty"),
    ({"text": "3/4/17", "length_penalty": -1}, 400, "length_penalty"),
    ({"text": "3/4/17", "return_attention": "yes"}, 400, "return_attention"),
    ({"text": "3/4/17", "attention_heads": 1}, 400, "attention_heads"),
    ({"text": "3/4/17", "colour": "red"}, 400, "colour"),
    (b"{" + b" " * 8000 + b"}", 413, "body"),
]


@pytest.mark.parametrize("body, status, field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_4xx_naming_its_field(server, body, status, field):
    got, answer = request(server, "/translate", body)
    assert (got, answer["field"]) == (status, field), answer
    assert answer["error"].startswith(field.split("[")[0])


def test_concurrent_requests_are_answered_correctly_in_shared_batches(server):
    sentences = [SENTENCES[i % len(SENTENCES)] + ("" if i < len(SENTENCES) else f" {i}") for i in range(24)]
    alone = {s: request(server, "/translate", {"text": s})[1]["translations"][0]["translation"] for s in sentences}
    before = request(server, "/stats")[1]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda s: request(server, "/translate", {"text": s}), sentences))
    assert all(status == 200 for status, _ in answers)
    assert [answer["translations"][0]["translation"] for _, answer in answers] == [alone[s] for s in sentences]
    after = request(server, "/stats")[1]
    assert after["requests"] - before["requests"] == 24
    assert after["batches"] - before["batches"] < 24 and after["largest_batch"] > 1  # batched, by its own count


def test_sigterm_finishes_the_requests_in_flight_then_exits(run_dir):
    process, url = start_server(run_dir, "--backend", "numpy", "--max-wait-ms", "500")
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(request, url, "/translate", {"text": s}) for s in SENTENCES]
        time.sleep(0.25)  # the requests are in, waiting for their batch
        process.send_signal(signal.SIGTERM)
        answers = [future.result() for future in futures]
    assert [status for status, _ in answers] == [200] * len(SENTENCES)
    assert process.wait(60) == -signal.SIGTERM


def test_the_micro_batcher_groups_equal_options_up_to_max_batch():
    calls = []

    def decode(texts, options):
        calls.append((list(texts), options))
        if "boom" in texts:
            raise ValueError("texts: boom")
        return [text.upper() for text in texts]

    greedy, beam = Options(1, 0.6, 1, False, False), Options(4, 0.6, 1, False, False)

    async def scenario():
        batcher = MicroBatcher(decode, max_batch=4, max_wait=0.05)
        await batcher.start()
        jobs = [batcher.submit([f"g{i}"], greedy) for i in range(5)] + [batcher.submit(["b0", "b1"], beam)]
        results = await asyncio.gather(*jobs)
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit(["boom"], greedy)
        assert await batcher.submit(["after"], greedy) == ["AFTER"]  # an error ends its batch, not the loop
        await batcher.stop()
        return results, batcher.stats()

    results, stats = asyncio.run(scenario())
    assert results == [["G0"], ["G1"], ["G2"], ["G3"], ["G4"], ["B0", "B1"]]
    # g4 waits its turn behind a full batch; b0, b1 (other options) behind g4's wait for company
    assert [(texts, options.beam) for texts, options in calls[:3]] == [
        (["g0", "g1", "g2", "g3"], 1), (["g4"], 1), (["b0", "b1"], 4)]
    assert stats["requests"] == 8 and stats["largest_batch"] == 4


def test_serve_refuses_bad_settings_before_loading(capsys, tmp_path):
    from seq2seq_lab.cli import main

    assert main(["serve", "--run", str(tmp_path), "--port", "70000"]) == 2
    assert "port: expected a port number in [0, 65535], got 70000" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"max_wait_ms: expected a number of milliseconds >= 0"):
        ServeLimits(max_wait_ms=-1)


def test_attention_of_any_hypothesis_equals_greedy_decodings_own(run_dir):
    translator = seq2seq_lab.load(run_dir)  # greedy weights from the jax decoder, teacher-forced from numpy
    for translation in translator.decode(SENTENCES, beam=1):
        np.testing.assert_allclose(translator.attention(translation), translation.attention, atol=2e-5)
        heads = translator.attention(translation, heads=True)
        assert heads.shape == (1, 2, *translation.attention.shape)
        np.testing.assert_allclose(heads[-1].mean(axis=0), translation.attention, atol=2e-5)
    with pytest.raises(ValueError, match=r"hypothesis: expected an index in \[0, 1\)"):
        translator.attention(translation, 1)
    with pytest.raises(ValueError, match=r"heads: expected True or False, got 'yes'"):
        translator.attention(translation, heads="yes")


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(chromium() is None, reason="no Chromium and ChromeDriver installed (Debian: apt-get install "
                                               "chromium chromium-driver; .ci/run installs them where it can)")
def test_the_page_translates_and_shows_a_heatmap_in_a_real_browser(server, tmp_path):
    """docs/serve-page.png comes from this test: SEQ2SEQ_SCREENSHOT=docs/serve-page.png
    SEQ2SEQ_SCREENSHOT_RUN=runs/m30k SEQ2SEQ_SCREENSHOT_TEXT='Ein Mann ...' python -m pytest -k real_browser"""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (the browser extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    text, process = os.environ.get("SEQ2SEQ_SCREENSHOT_TEXT", SENTENCES[0]), None
    if os.environ.get("SEQ2SEQ_SCREENSHOT_RUN"):
        process, server = start_server(Path(os.environ["SEQ2SEQ_SCREENSHOT_RUN"]))

    browser, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    page = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        page.get(server)
        WebDriverWait(page, 30).until(lambda p: "encoder" in p.find_element(By.ID, "model").text)
        page.find_element(By.ID, "source").send_keys(text)
        page.find_element(By.ID, "beam").clear()
        page.find_element(By.ID, "beam").send_keys("3")
        page.find_element(By.ID, "nbest").clear()
        page.find_element(By.ID, "nbest").send_keys("2")
        page.find_element(By.ID, "translate").click()
        WebDriverWait(page, 60).until(lambda p: p.find_elements(By.CSS_SELECTOR, "table.heatmap td"))
        expected = request(server, "/translate", {"text": text, "beam": 3})[1]["translations"][0]
        assert page.find_element(By.CSS_SELECTOR, ".translation").text == expected["translation"].strip()
        rows = page.find_elements(By.CSS_SELECTOR, "table.nbest tr")
        assert len(rows) == 2
        cells = page.find_elements(By.CSS_SELECTOR, "table.heatmap tbody tr")
        rows[1].click()  # the second hypothesis's heatmap replaces the first's
        WebDriverWait(page, 10).until(lambda p: "chosen" in rows[1].get_attribute("class"))
        assert page.find_element(By.CSS_SELECTOR, "table.heatmap")
        assert cells  # one row per output piece of the first hypothesis
        # a model with several heads: the second head of the last block, as the API gives it
        assert page.find_element(By.ID, "head-choice").is_displayed()
        Select(page.find_element(By.ID, "head")).select_by_value("1")
        second = request(server, "/translate", {"text": text, "beam": 3, "n_best": 2, "attention_heads": True})[1]
        weights = np.array(second["translations"][0]["hypotheses"][1]["attention_heads"])[-1, 1]
        shown = [float(cell.get_attribute("title").rsplit(": ", 1)[1])
                 for cell in page.find_elements(By.CSS_SELECTOR, "table.heatmap td")]
        np.testing.assert_allclose(shown, weights.ravel(), atol=6e-4)  # the page shows 3 decimals
        shot = os.environ.get("SEQ2SEQ_SCREENSHOT")  # docs/serve-page.png is taken this way
        page.save_screenshot(shot or str(tmp_path / "page.png"))
    finally:
        page.quit()
        if process is not None:
            process.terminate()
            process.wait(60)


def test_micro_batches_are_padded_to_few_shapes_and_answer_as_alone(run_dir):
    from seq2seq_lab.serve import TranslationService

    translator = seq2seq_lab.load(run_dir, backend="numpy")
    assert TranslationService(translator, ServeLimits(max_batch=32)).row_counts == [1, 8, 32]
    assert TranslationService(translator, ServeLimits(max_batch=100)).row_counts == [1, 8, 32, 100]
    assert TranslationService(translator, ServeLimits(max_batch=5)).row_counts == [1, 5]
    service = TranslationService(translator, ServeLimits(max_batch=8))
    seen = []
    decode = translator.decode
    translator.decode = lambda texts, **kw: seen.append((len(texts), kw["batch_tokens"])) or decode(texts, **kw)
    answers = service.decode(["", SENTENCES[0], SENTENCES[1]], Options(2, 0.6, 2, False, True))
    # two sentences (and a blank) decoded in a batch of 8 rows, 16 wide: filler rows, answers discarded
    assert seen == [(9, 8 * 16)] and len(answers) == 3 and answers[0]["hypotheses"] == []
    alone = decode(SENTENCES[1:2], beam=2, length_penalty=0.6, n_best=2)[0]
    assert [h["text"] for h in answers[2]["hypotheses"]] == [h.text for h in alone.hypotheses]
    assert translator.source_ids(SENTENCES[1]) == translator.src_vocab.encode(SENTENCES[1])
    translator.compile(8, 16, beam=2)  # a batch of that shape decodes: the programs exist afterwards
    with pytest.raises(ValueError, match=r"rows: expected an int >= 1, got 0"):
        translator.compile(0, 16)
