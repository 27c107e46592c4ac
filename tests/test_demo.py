"""The foundation demo runs end to end on CPU and writes both GIFs."""
import imageio.v2 as imageio

from tdd_video import demo


def test_demo_runs_and_writes_gifs(tmp_path, capsys):
    res = demo.main(["--out", str(tmp_path), "--steps", "2", "--seed", "1"])
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and str(res["ours"]) in printed and str(res["stock"]) in printed
    for key in ("ours", "stock"):
        frames = imageio.mimread(res[key])
        assert len(frames) == 8 and frames[0].shape[:2] == (64, 64)
    assert (res["model_dir"] / "model_index.json").is_file()
