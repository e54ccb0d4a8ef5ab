"""`selfsup show`: a source's images as the model sees them, and their augmented views."""

from PIL import Image

from selfsup.cli import main
from selfsup.report.grids import GAP, MIN_CELL


def test_show_draws_the_samples_and_their_views(tmp_path, capsys):
    samples = tmp_path / "samples.png"
    assert main(["show", "digits", "--out", str(samples), "--count", "10"]) == 0
    assert "digits:train" in capsys.readouterr().out
    width, height = Image.open(samples).size
    side = MIN_CELL + GAP
    assert width == 4 * side + GAP  # 10 images: 4 columns, 3 rows, each captioned
    assert height == 3 * (side + 12) + GAP

    views = tmp_path / "views.png"
    assert main(["show", "digits", "--views", "--method", "dino", "--out", str(views), "augment.recipe=dino", "augment.local_crops=3"]) == 0
    assert "5 (dino)" in capsys.readouterr().out  # 2 global + 3 local crops
    width, height = Image.open(views).size
    assert width == 6 * side + 3 * GAP and height == 16 * side + GAP  # the image and 5 views, 16 rows


def test_show_refuses_what_it_cannot_draw(tmp_path, capsys):
    assert main(["show", "digits", "--method", "mlm", "--out", str(tmp_path / "a.png")]) == 2
    assert "draws image sources" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing"), "--out", str(tmp_path / "b.png")]) == 2
    assert main(["show", "digits", "--count", "0", "--out", str(tmp_path / "c.png")]) == 2
