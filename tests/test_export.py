"""`selfsup export`: a tiny image run and a tiny text run exported to ONNX, a torch.export
program and safetensors give the features of `Method.embed`, with the preprocessing in each
file's metadata; the README's onnxruntime recipe reproduces them from a PNG."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from tokenizers import Tokenizer
from torch import nn

from selfsup import config as config_module
from selfsup import runs
from selfsup.config import Config, ConfigError
from selfsup.data.tokenizer import encode_documents
from selfsup.export import export_run, read_metadata
from selfsup.methods import Method
from selfsup.modalities.base import LoadedRun
from selfsup.modalities.image import ImageModality

# Whole runs, then their export (seconds each).
pytestmark = pytest.mark.e2e

TOLERANCE = 1e-4

# README.md's recipe, word for word: embed an image with the exported file, numpy, Pillow and onnxruntime alone.
README_RECIPE = """
import json, numpy as np, onnxruntime as ort; from PIL import Image, ImageOps
session = ort.InferenceSession("model.onnx"); p = json.loads(session.get_modelmeta().custom_metadata_map["selfsup"])["preprocessing"]
image = ImageOps.fit(Image.open("photo.jpg").convert(p["mode"]), (p["size"], p["size"]), Image.Resampling.BILINEAR)
x = (np.asarray(image, np.float32).reshape(p["size"], p["size"], -1) / 255 - p["mean"]) / p["std"]
features = session.run(None, {"images": x.transpose(2, 0, 1)[None].astype(np.float32)})[0]  # [1, D]
"""


def _onnxruntime():
    """onnx, onnxruntime and onnxscript (torch.onnx's exporter), or skip."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


def _train(overrides: list[str]) -> LoadedRun:
    config = config_module.apply_overrides(Config(), overrides)
    runs.pretrain(config)
    return runs.load_run(Path(config.out))


def _batches(session, name: str, inputs: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([session.run(None, {name: inputs[i : i + size]})[0] for i in range(0, len(inputs), size)])


def test_an_image_run_exports_to_onnx_pt2_and_safetensors_with_its_preprocessing(tmp_path, tiny_overrides):
    ort = _onnxruntime()
    import onnx

    # Trained on 12 px crops: evaluation, embed and the export read the whole 16 px image.
    run = _train(tiny_overrides + ["augment.global_size=12", "train.epochs=1", "train.batch_size=256", "eval.enabled=false",
                                   f"out={tmp_path / 'run'}"])
    config, method = run.config, run.method
    assert (config.augment.global_size, config.augment.eval_size, config.data.size) == (12, 16, 16)
    pixels = torch.randint(0, 256, (32, config.data.channels, config.data.size, config.data.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    images = ImageModality().build_view_maker(config).eval_view(pixels)  # what embed reads
    expected = method.embed(images).numpy()

    # ONNX: a valid graph, a dynamic batch axis, the features of embed.
    result = export_run(run, "onnx")
    path = tmp_path / "run" / "export" / "convnet-small.onnx"
    assert result["file"] == str(path) and path.is_file()
    assert result["inputs"] == {"images": ["batch", 1, 16, 16]} and result["output_dim"] == expected.shape[1]
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][0] == "batch"
    session = ort.InferenceSession(str(path))
    for batch_size in (32, 5):  # one batch, then uneven ones through the dynamic axis
        np.testing.assert_allclose(_batches(session, "images", images.numpy(), batch_size), expected, atol=TOLERANCE, rtol=0)

    # The metadata says how a pixel becomes an input: size, channels, mean, std, range.
    props = {p.key: p.value for p in model.metadata_props}
    metadata = json.loads(props["selfsup"])
    preprocessing = metadata["preprocessing"]
    assert preprocessing["size"] == config.augment.eval_size and preprocessing["channels"] == 1 and preprocessing["mode"] == "L"
    assert preprocessing["mean"] == list(config.augment.mean) and preprocessing["std"] == list(config.augment.std)
    assert preprocessing["value_range"] == [0, 1] and "centre-crop" in preprocessing["resize"]
    assert metadata["method"] == "simclr" and metadata["output"]["dim"] == expected.shape[1]
    assert json.loads(props["mean"]) == list(config.augment.mean) and props["size"] == "16" and props["output_dim"] == str(expected.shape[1])

    # The README's recipe: numpy, Pillow and onnxruntime alone, from an image file.
    png = tmp_path / "digit.png"
    Image.fromarray(pixels[3, 0].numpy(), mode="L").save(png)
    readme_features = _readme_recipe(path, png)
    np.testing.assert_allclose(readme_features, expected[3:4], atol=TOLERANCE, rtol=0)

    # torch.export program (also under the name, torchscript), with the projector.
    result = export_run(run, "torchscript", out=tmp_path / "model.pt2", projector=True)
    assert result["format"] == "pt2" and result["metadata"]["projector"] is True
    extra = {"selfsup.json": ""}
    program = torch.export.load(tmp_path / "model.pt2", extra_files=extra)
    assert json.loads(extra["selfsup.json"])["preprocessing"] == preprocessing
    with torch.no_grad():
        projected = program.module()(images[:7])
        torch.testing.assert_close(projected, method.projector(method.backbone(images[:7])), atol=TOLERANCE, rtol=0)

    # safetensors: the backbone's weights, the same metadata.
    result = export_run(run, "safetensors")
    with safe_open(result["file"], framework="pt") as handle:
        names = set(handle.keys())
        assert json.loads(handle.metadata()["selfsup"])["preprocessing"] == preprocessing
        state = {name: handle.get_tensor(name) for name in names}
    assert names == {f"backbone.{name}" for name in method.backbone.state_dict()}
    for name, tensor in method.backbone.state_dict().items():
        torch.testing.assert_close(state[f"backbone.{name}"], tensor)
    assert read_metadata(result["file"])["format"] == "safetensors"

    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_run(run, "tflite")


def _readme_recipe(model: Path, image: Path) -> np.ndarray:
    """The features README_RECIPE computes for ``image`` with ``model``."""
    code = README_RECIPE.replace('"model.onnx"', repr(str(model))).replace('"photo.jpg"', repr(str(image)))
    scope: dict = {}
    exec(code, scope)
    return scope["features"]


SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "birds sing in the morning",
    "the sun rises in the east", "fish swim in the river", "the moon shines at night",
]
TINY_TEXT = [  # tests/test_text_pipeline.py's tiny encoder, one epoch
    "method.name=mlm", "backbone.width=32", "backbone.depth=2", "backbone.heads=2", "text.vocab_size=120", "text.max_length=16",
    "text.test_fraction=0.2", "train.batch_size=8", "train.lr=0.1", "train.epochs=1", "train.checkpoint_every=1000",
    "eval.enabled=false",
]


def test_a_text_run_exports_its_encoder_with_its_tokenizer(tmp_path):
    ort = _onnxruntime()
    import onnx

    corpus = tmp_path / "corpus"
    for topic, chosen in (("animals", SENTENCES[:3]), ("sky", SENTENCES[3:])):
        (corpus / topic).mkdir(parents=True)
        (corpus / topic / "text.txt").write_text("\n\n".join(chosen * 6))
    run = _train([f"data.source={corpus}", f"out={tmp_path / 'run'}", *TINY_TEXT])
    max_length = run.config.text.max_length

    result = export_run(run, "onnx", out=tmp_path / "out" / "encoder.onnx")
    assert result["inputs"] == {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]}
    tokenizer_file = tmp_path / "out" / "tokenizer.json"
    assert result["tokenizer"] == str(tokenizer_file)
    assert tokenizer_file.read_text() == (tmp_path / "run" / "tokenizer.json").read_text()
    model = onnx.load(result["file"])
    onnx.checker.check_model(model)
    metadata = json.loads({p.key: p.value for p in model.metadata_props}["selfsup"])
    assert metadata["preprocessing"]["max_length"] == max_length and metadata["preprocessing"]["tokenizer"] == "tokenizer.json"

    # 32 texts as a user encodes them with the copied tokenizer: padded to the longest, not to max_length.
    texts = [SENTENCES[i % 6] if i % 3 else " ".join(SENTENCES[i % 6].split()[:2]) for i in range(32)]
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    assert ids.shape[1] < max_length  # the sequence axis is dynamic too
    run_ids, _ = encode_documents(tokenizer, texts, max_length)  # as the run encodes documents
    assert (run_ids[:, : ids.shape[1]].numpy() == ids).all()
    expected = run.method.embed(run_ids).numpy()

    session = ort.InferenceSession(result["file"])
    for batch_size in (32, 6):
        got = np.concatenate([session.run(None, {"input_ids": ids[i : i + batch_size], "attention_mask": mask[i : i + batch_size]})[0]
                              for i in range(0, len(ids), batch_size)])
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)

    program = torch.export.load(export_run(run, "pt2", out=tmp_path / "out" / "encoder.pt2")["file"])
    with torch.no_grad():
        torch.testing.assert_close(program.module()(run_ids[:5], (run_ids[:5] != 0).long()), torch.from_numpy(expected[:5]),
                                   atol=TOLERANCE, rtol=0)
    with safe_open(export_run(run, "safetensors")["file"], framework="pt") as handle:
        assert set(handle.keys()) == {f"backbone.{name}" for name in run.method.backbone.state_dict()}
    assert (tmp_path / "run" / "export" / "tokenizer.json").is_file()

    with pytest.raises(ConfigError, match="method.name=mlm has no projector"):
        export_run(run, "onnx", projector=True)


class _ClipModel(Method):
    """A stand-in video method (no name: it stays out of the registry)."""

    modality = "video"


def test_video_runs_are_refused_in_one_line(tmp_path):
    run = LoadedRun(tmp_path, Config(), _ClipModel(nn.Identity()), {})
    with pytest.raises(ConfigError, match="video run") as error:
        export_run(run, "onnx")
    assert "\n" not in str(error.value)
