"""Media discovery: one folder gives the same files, in the same order, to encode, train and eval."""

import os

import numpy as np
import pytest

from pvvae_cli.eval.protocol import EvalProtocol
from pvvae_cli.media.discovery import (
    MediaNotFound,
    NoMediaFound,
    collect_videos,
    expand_inputs,
    media_exts,
    walk_media,
)
from pvvae_cli.media.writer import write_video
from pvvae_cli.train.data import DataError, scan_media


@pytest.fixture
def folder(tmp_path):
    """Videos at two depths, an image, a hidden folder and a hidden file (both with videos), and files we do not
    read (text, a video suffix in upper case is read)."""
    root = tmp_path / "media"
    clip = np.zeros((5, 16, 16, 3), np.uint8)
    write_video(root / "b.mp4", clip, fps=8)
    write_video(root / "a" / "z.mp4", clip, fps=8)
    write_video(root / "a" / "still.png", clip[:1], fps=0)
    write_video(root / ".cache" / "hidden.mp4", clip, fps=8)
    write_video(root / "a" / ".partial.mp4", clip, fps=8)
    (root / "notes.txt").write_text("not media")
    (root / "c.MP4").write_bytes((root / "b.mp4").read_bytes())
    return root


def test_one_folder_one_file_list_for_encode_train_and_eval(folder):
    want = [folder / "a" / "still.png", folder / "a" / "z.mp4", folder / "b.mp4", folder / "c.MP4"]
    encode = [f for f, _ in expand_inputs([str(folder)], media_exts())[0]]
    train = scan_media([folder], videos_only=False)  # the image stage (1-frame clips)
    evaluate = EvalProtocol(frames=1, size=16).find_videos([folder])  # 1-frame clips take images too
    assert encode == train == evaluate == want
    videos = [p for p in want if p.suffix != ".png"]
    assert scan_media([folder], videos_only=True) == EvalProtocol(frames=5, size=16).find_videos([folder]) == videos
    assert collect_videos([folder]) == videos == [f for f, _ in expand_inputs([str(folder)], media_exts(False))[0]]


def test_walk_follows_links_once_and_reports_missing_inputs(folder, tmp_path):
    os.symlink(folder / "a", folder / "a" / "loop")  # a cycle: a/loop -> a
    os.symlink(folder / "a", folder / "link")  # a second way into a/
    found = walk_media(folder, media_exts())
    assert len(found) == len(set(p.resolve() for p in found)) == 4  # each real file once, no endless walk
    with pytest.raises(MediaNotFound, match="no such file or folder"):
        collect_videos([tmp_path / "missing"])
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden" / "x.mp4").write_bytes(b"")
    with pytest.raises(NoMediaFound, match="no video files found"):
        collect_videos([tmp_path / "empty"])
    with pytest.raises(DataError, match="no video or image files found"):
        scan_media([tmp_path / "empty"], videos_only=False)
    assert expand_inputs([str(tmp_path / "empty")], media_exts())[1][0][1].startswith("folder has no files")
