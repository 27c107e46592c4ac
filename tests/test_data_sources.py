"""Sources: folder with captions, CSV/JSONL manifests, WebVid CSV, manifest errors, missing rows."""
import json
import logging

import pytest

from tdd_video.data.dataset import DataFailureError, build_video_dataset
from tdd_video.data.sources import ManifestError, detect_source, load_records, split_missing
from tdd_video.errors import ConfigError


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_with_sibling_captions(tmp_path):
    _touch(tmp_path / "b" / "clip2.webm")
    _touch(tmp_path / "clip1.mp4")
    (tmp_path / "clip1.txt").write_text("a cat jumps\n")
    _touch(tmp_path / "notes.md")
    recs = load_records("auto", tmp_path)
    assert [r.path.name for r in recs] == ["clip2.webm", "clip1.mp4"]  # sorted by full path
    caps = {r.path.name: r.caption for r in recs}
    assert caps == {"clip1.mp4": "a cat jumps", "clip2.webm": ""}


def test_csv_manifest_relative_paths_and_fields(tmp_path):
    _touch(tmp_path / "data" / "v" / "a.mp4")
    m = tmp_path / "data" / "train.csv"
    m.write_text("path,caption,fps,motion_bucket_id,start,end\n"
                 "v/a.mp4,hello,29.97,80,1.5,4\n"
                 f"{tmp_path}/abs.mp4,,,,,\n")
    recs = load_records("auto", m)
    assert recs[0].path == tmp_path / "data" / "v" / "a.mp4"
    assert (recs[0].caption, recs[0].fps, recs[0].motion_bucket_id, recs[0].start, recs[0].end) == \
        ("hello", 29.97, 80, 1.5, 4.0)
    assert recs[1].path == tmp_path / "abs.mp4" and recs[1].fps is None and recs[1].line == 3
    present, missing = split_missing(recs)
    assert len(present) == 1 and missing[0].path.name == "abs.mp4"


def test_jsonl_manifest(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": "x.mp4", "caption": "c", "motion_bucket_id": 3}) + "\n\n" +
                 json.dumps({"path": "y.mp4"}) + "\n")
    recs = load_records("manifest", m)
    assert [r.path.name for r in recs] == ["x.mp4", "y.mp4"] and recs[0].motion_bucket_id == 3


@pytest.mark.parametrize("content,match", [
    ("file,caption\na.mp4,x\n", r"line 2: missing required column 'path'"),
    ("path,fps\na.mp4,fast\n", r"line 2, column 'fps': expected a number, got 'fast'"),
    ("path,motion_bucket_id\na.mp4,2.5\n", r"column 'motion_bucket_id': expected an integer"),
    ("path,start,end\na.mp4,1,3\nb.mp4,5,2\n", r"line 3, columns 'start'/'end'"),
    ("path,fps\na.mp4,-3\n", r"column 'fps': must be >= 0"),
    ("path\n\"\"\n", r"column 'path': empty"),
])
def test_manifest_errors_name_row_and_column(tmp_path, content, match):
    m = tmp_path / "bad.csv"
    m.write_text(content)
    with pytest.raises(ManifestError, match=match):
        load_records("manifest", m)


def test_jsonl_syntax_error_names_line(tmp_path):
    m = tmp_path / "bad.jsonl"
    m.write_text('{"path": "a.mp4"}\n{"path": \n')
    with pytest.raises(ManifestError, match="line 2: invalid JSON"):
        load_records("manifest", m)


def test_webvid_csv(tmp_path):
    _touch(tmp_path / "videos" / "001_050" / "1066.mp4")
    _touch(tmp_path / "videos" / "2077.mp4")
    m = tmp_path / "results_2M_val.csv"
    m.write_text("videoid,contentUrl,duration,page_dir,name\n"
                 "1066,http://x,PT00H00M10S,001_050,Aerial shot of a lake\n"
                 "2077,http://y,PT00H00M08S,051_100,Dog running\n")
    assert detect_source(m) == "webvid"
    recs = load_records("auto", m, video_root=tmp_path / "videos")
    assert recs[0].path == tmp_path / "videos" / "001_050" / "1066.mp4"
    assert recs[1].path == tmp_path / "videos" / "2077.mp4"      # flat layout fallback
    assert [r.caption for r in recs] == ["Aerial shot of a lake", "Dog running"]
    bad = tmp_path / "bad_webvid.csv"
    bad.write_text("videoid,page_dir,name\n,001,x\n")
    with pytest.raises(ManifestError, match="line 2: missing value in required column 'videoid'"):
        load_records("webvid", bad)


def test_rows_pointing_nowhere_reported_at_startup(tmp_path, caplog):
    _touch(tmp_path / "ok.mp4")
    rows = "path\nok.mp4\n" + "".join(f"gone{i}.mp4\n" for i in range(3))
    (tmp_path / "m.csv").write_text(rows)
    cfg = {"path": str(tmp_path / "m.csv"), "max_failure_fraction": 0.9}
    with caplog.at_level(logging.WARNING, logger="tdd_video.data"):
        ds = build_video_dataset(cfg)
    assert len(ds) == 1 and "3 data rows point to no file" in caplog.text and "gone0.mp4 (line 3)" in caplog.text
    with pytest.raises(DataFailureError, match="3 data rows point to no file"):
        build_video_dataset({**cfg, "max_failure_fraction": 0.5})
    with pytest.raises(ConfigError, match="data.path"):
        build_video_dataset({"path": ""})
    with pytest.raises(FileNotFoundError, match="data source not found"):
        build_video_dataset({"path": str(tmp_path / "nope.csv")})
