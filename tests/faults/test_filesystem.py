"""Read-only and full filesystems, a corrupt cache, a closed pipe and the user's umask."""

import json
import subprocess
import sys

import pytest
from helpers import one_line_error, remount, tmpfs

from taskmem_lab.store import RunDir
from taskmem_lab.testing.command import taskmem

FAKE = ["--model", "fake", "-q"]


@pytest.mark.slow
def test_a_read_only_output_folder_is_one_line(media, tmp_path):
    with tmpfs(tmp_path / "ro") as ro:
        remount(ro, "ro")
        proc = taskmem("memorize", media["silent"], *FAKE, "--no-cache", "--out", ro, check=False)
    one_line_error(proc, r"cannot write .*Read-only file system.*choose a writable --out")


@pytest.mark.slow
def test_a_read_only_cache_is_one_line(media, tmp_path):
    with tmpfs(tmp_path / "ro") as ro:
        taskmem("memorize", media["silent"], *FAKE, "--cache", ro / "c.sqlite", "--out", tmp_path)
        remount(ro, "ro")
        proc = taskmem("memorize", media["silent"], *FAKE, "--cache", ro / "c.sqlite",
                       "--out", tmp_path / "2", check=False)  # fmt: skip
    one_line_error(proc, r"response cache .*c\.sqlite: it is not writable.*--no-cache")


@pytest.mark.slow
def test_a_corrupt_cache_is_one_line(media, tmp_path):
    cache = tmp_path / "c.sqlite"
    cache.write_bytes(b"this is not a database" * 100)
    proc = taskmem("memorize", media["silent"], *FAKE, "--cache", cache, "--out", tmp_path,
                   check=False)  # fmt: skip
    one_line_error(proc, r"response cache .*: it is corrupt .*move it away")
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    proc = taskmem("memorize", media["silent"], *FAKE, "--cache", folder, "--out", tmp_path,
                   check=False)  # fmt: skip
    one_line_error(proc, r"is a folder, not a file")


@pytest.mark.slow
def test_a_full_disk_says_so_loses_nothing_and_resumes(media, tmp_path):
    video = media["three_min"]
    taskmem("memorize", video, *FAKE, "--no-cache", "--out", tmp_path / "ref", "--tag", "m")
    ref = RunDir(tmp_path / "ref" / "three_min" / "memory" / "m")
    with tmpfs(tmp_path / "full", size="12k") as full:
        proc = taskmem("memorize", video, *FAKE, "--no-cache", "--out", full, "--tag", "m",
                       check=False)  # fmt: skip
        one_line_error(proc, r"disk full .*nothing finished is lost.*run again to resume")
        run = RunDir(full / "three_min" / "memory" / "m")
        stored = run.finished()
        assert 0 < len(stored) < 18
        want = ref.finished()
        assert all(stored[k].episodic == want[k].episodic for k in stored)
        remount(full, "size=4m")
        taskmem("memorize", video, *FAKE, "--no-cache", "--out", full, "--tag", "m")
        got = run.finished()
        assert [r.episodic for r in got.values()] == [r.episodic for r in want.values()]
        assert run.manifest()["status"] == "complete"


def test_show_into_a_closed_pipe_is_quiet(tmp_path):
    memory = tmp_path / "m.jsonl"
    rows = (
        json.dumps({"start": i, "end": i + 1, "text": f"entry {i} " * 20}) for i in range(20000)
    )
    memory.write_text("\n".join(rows) + "\n")
    proc = subprocess.run(
        f"{sys.executable} -m taskmem_lab.cli show {memory} | head -2; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) == 2


@pytest.mark.slow
def test_files_get_the_users_umask(media, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "taskmem_lab.cli", "memorize", str(media["silent"]), *FAKE,
         "--no-cache", "--out", str(tmp_path), "--tag", "m"],
        capture_output=True, text=True, timeout=300, umask=0o027,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "silent" / "memory" / "m"
    for name in ("manifest.json", "clips.jsonl", "identities.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o640, name
