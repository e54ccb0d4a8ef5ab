"""The text pipeline end to end on a tiny corpus: tokenizer, masked and causal language
models, fill-mask, text embeddings, and the errors a user can run into."""

import pytest

from selfsup import config as config_module
from selfsup import runs
from selfsup.cli import main
from selfsup.config import Config, ConfigError
from selfsup.data.tokenizer import load_tokenizer
from selfsup.modalities import text
from selfsup.train.logging import read_metrics

# Whole runs (`selfsup pretrain` and the commands after it).
pytestmark = pytest.mark.e2e

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "birds sing in the morning",
    "the sun rises in the east",
    "fish swim in the river",
    "the moon shines at night",
]
# Tiny encoder, tiny vocabulary; a learning rate that moves it at batch 8 (lr scales with batch / 256).
TINY_TEXT = [
    "backbone.width=32", "backbone.depth=2", "backbone.heads=2", "text.vocab_size=120", "text.max_length=16",
    "text.test_fraction=0.2", "train.batch_size=8", "train.lr=0.1", "train.log_every=20", "train.checkpoint_every=1000",
    "eval.fewshot_seeds=1",
]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    for topic, repeats in (("animals", 6), ("sky", 6)):
        (folder / topic).mkdir(parents=True)
        chosen = SENTENCES[:3] if topic == "animals" else SENTENCES[3:]
        (folder / topic / "text.txt").write_text("\n\n".join(chosen * repeats))
    return folder


def _config(tmp_path, corpus, method="mlm", *extra):
    return config_module.apply_overrides(
        Config(), [f"method.name={method}", f"data.source={corpus}", f"out={tmp_path / method}", *TINY_TEXT, *extra]
    )


def test_mlm_memorises_a_tiny_corpus_and_fills_the_mask(tmp_path, corpus):
    summary = runs.pretrain(_config(tmp_path, corpus, "mlm", "train.epochs=60"))
    run_dir = tmp_path / "mlm"
    assert (run_dir / "tokenizer.json").is_file() and load_tokenizer(run_dir / "tokenizer.json").get_vocab_size() <= 120
    assert summary["masked_accuracy"] > 0.5 and summary["perplexity"] < 10
    assert {"energy_auc", "knn_top1", "linear_top1", "fewshot", "baselines"} <= summary.keys()
    assert set(summary["baselines"]) == {"bag_of_words", "random_init", "mean_word2vec"}
    assert (run_dir / "baselines" / "mean_word2vec" / "tokenizer.json").read_text() == (run_dir / "tokenizer.json").read_text()

    (position, candidates), = text.fill_mask(runs.load_run(run_dir), "the cat sat on the [MASK]", top_k=3)
    assert position == 0 and candidates[0][0] == "mat", candidates
    assert sum(p for _, p in candidates) <= 1 + 1e-6

    sentences = text.embed_texts(runs.load_run(run_dir), ["the cat sat", "fish swim"], out=tmp_path / "s.npy")
    assert sentences["features"].shape == (2, 32) and (tmp_path / "s.npy").is_file()
    tokens = text.embed_texts(runs.load_run(run_dir), ["the cat sat"], out=None, tokens=True)
    assert tokens["features"].shape == (5, 32)  # [CLS] the cat sat [SEP]

    # The report of a text run: its probes, homonyms and fill-mask guesses.
    report = runs.report_runs([run_dir], tmp_path / "report.html").read_text()
    assert "Return the [MASK] of the list." in report and "<h2>Text</h2>" in report


def test_causal_model_trains_and_refuses_fill_mask(tmp_path, corpus):
    summary = runs.pretrain(_config(tmp_path, corpus, "causal", "train.epochs=20", "eval.baselines=false"))
    assert summary["masked_accuracy"] > 0.3  # next-token accuracy on held-out sentences
    with pytest.raises(ConfigError, match="causal"):
        text.fill_mask(runs.load_run(tmp_path / "causal"), "the [MASK] sat", top_k=3)


def test_text_commands_report_clear_errors(tmp_path, corpus, capsys):
    assert main(["pretrain", "--modality", "image", "--method", "mlm", "--data", str(corpus)]) == 2
    assert "learns from text" in capsys.readouterr().err
    assert main(["pretrain", "--modality", "text", "--data", str(tmp_path / "missing"), *TINY_TEXT]) == 2
    assert "missing" in capsys.readouterr().err

    run_dir = tmp_path / "run"
    assert main(["pretrain", "--modality", "text", "--data", str(corpus), "--epochs", "1", "--out", str(run_dir),
                 *TINY_TEXT, "eval.enabled=false"]) == 0
    recorded = config_module.load(run_dir / "config.yaml")
    assert recorded.method["name"] == "mlm" and recorded.backbone.name == "transformer" and recorded.text.vocab_size <= 120
    assert main(["embed", str(run_dir), "--data", "digits", "--out", str(tmp_path / "x.npy")]) == 2
    assert "--text" in capsys.readouterr().err
    assert main(["fill-mask", str(run_dir), "no mask here"]) == 2
    assert "[MASK]" in capsys.readouterr().err
    assert main(["fill-mask", str(run_dir), "the cat sat on the mat and the dog sat on the [MASK]"]) == 2
    assert "falls after the first 16 tokens" in capsys.readouterr().err  # text.max_length=16
    assert main(["fill-mask", str(run_dir), "the cat sat on the [MASK]", "--top-k", "2"]) == 0
    assert "probability" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["word2vec", "glove"])
def test_static_models_train_give_one_vector_per_word_and_similar_words(tmp_path, corpus, method):
    summary = runs.pretrain(_config(tmp_path, corpus, method, "train.epochs=30", "eval.baselines=false"))
    losses = [r["loss"] for r in read_metrics(tmp_path / method / "metrics.jsonl") if r["kind"] == "train"]
    assert losses[-1] < losses[0]
    assert "perplexity" not in summary and 0 <= summary["energy_auc"] <= 1
    # The homonym check: a static vector is the same in every sentence.
    assert summary["homonyms"]["words"] and summary["homonyms"]["mean_cosine"] == pytest.approx(1.0)
    neighbours = text.similar_words(runs.load_run(tmp_path / method), "cat", top_k=3)
    assert len(neighbours) == 3 and all(word != "cat" and -1 <= cosine <= 1 for word, cosine in neighbours)
    with pytest.raises(ConfigError, match="single token"):
        text.similar_words(runs.load_run(tmp_path / method), "platypus")


def test_contextual_vectors_of_a_word_differ_between_sentences(tmp_path, corpus):
    summary = runs.pretrain(_config(tmp_path, corpus, "mlm", "train.epochs=5", "eval.baselines=false"))
    homonyms = summary["homonyms"]
    assert "the" in homonyms["words"] or homonyms["words"]
    assert homonyms["mean_cosine"] < 0.999
    with pytest.raises(ConfigError, match="static"):
        text.similar_words(runs.load_run(tmp_path / "mlm"), "cat")


def test_a_second_text_run_reads_the_baselines_and_trains_no_word2vec(tmp_path, corpus, capsys):
    first = runs.pretrain(_config(tmp_path, corpus, "mlm", "train.epochs=2", f"out={tmp_path / 'first'}"))
    assert (tmp_path / "first" / "baselines" / "mean_word2vec").is_dir() and "read from" not in capsys.readouterr().err
    second = runs.pretrain(_config(tmp_path, corpus, "mlm", "train.epochs=3", f"out={tmp_path / 'second'}"))
    assert "baselines: measured" in capsys.readouterr().err
    assert second["baselines"] == first["baselines"] and not (tmp_path / "second" / "baselines").exists()
    # Shorter sequences are other token ids: measured again.
    runs.pretrain(_config(tmp_path, corpus, "mlm", "train.epochs=2", "text.max_length=8", f"out={tmp_path / 'third'}"))
    assert "read from" not in capsys.readouterr().err and (tmp_path / "third" / "baselines" / "mean_word2vec").is_dir()
