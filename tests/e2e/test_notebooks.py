"""The smoke profile end to end (papermill, every notebook) run from another folder with the
network blocked: everything under `--work`, nothing in the repository, nothing fetched, quiet
outputs, figures with data, no secrets, and an executed 03 that shows the memory when exported to
HTML."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every notebook under papermill: minutes

pytest.importorskip("papermill")
pytest.importorskip("dlib")
pytest.importorskip("faster_whisper")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FAKE_KEY = "sk-test" + "Q" * 40  # what a real key looks like; it must be written nowhere
NOTEBOOKS = (
    "01_audio",
    "02_faces",
    "03_episodic",
    "04_qa",
    "05_ablations",
    "06_paper",
    "07_adapt",
)


def repo_files() -> set[str]:
    """Files in the checkout that git does not ignore (the repository's own state)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return set()
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.splitlines())


# Loaded by every Python process of the run (PYTHONPATH): connections to anything but loopback
# and name look-ups of other hosts fail, and each attempt is logged to $TASKMEM_BLOCKED_LOG.
SOCKET_GUARD = """
import ipaddress, os, socket

def _blocked(what):
    with open(os.environ["TASKMEM_BLOCKED_LOG"], "a") as log:
        log.write(f"{os.getpid()} {what}\\n")
    raise OSError(f"network blocked by the offline test: {what}")

def _local(host):
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return str(host) in ("localhost", "")

_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _blocked(address)
    return _connect(self, address)

def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _blocked(address)
    return _connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _local(host if isinstance(host, str) else host.decode()):
        _blocked(host)
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
    connect, connect_ex, getaddrinfo)
"""


def without_network(guard_dir: Path) -> tuple[list[str], dict[str, str]]:
    """A command prefix and environment that take the network away: a network namespace with only
    loopback where this user may make one (root, with `unshare` and `ip`), and in any case the
    socket guard above and proxies that lead nowhere (pip and other clients)."""
    (guard_dir / "sitecustomize.py").write_text(SOCKET_GUARD)
    dead = "http://127.0.0.1:9"
    env = {
        "TASKMEM_BLOCKED_LOG": str(guard_dir / "blocked.log"),
        "PIP_NO_INDEX": "1",
        "HF_HUB_OFFLINE": "1",
        **{k: dead for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
        "no_proxy": "127.0.0.1,localhost",
    }
    prefix: list[str] = []
    if shutil.which("unshare") and shutil.which("ip"):
        probe = subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            prefix = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "offline"]
    return prefix, env


class SmokeRun:
    """`taskmem reproduce --profile smoke --only NAME` for each notebook in turn, into one `--work`
    folder, offline: the run of the whole profile, one notebook (and so one test) at a time."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.elsewhere = tmp_path_factory.mktemp("elsewhere")
        self.guard = tmp_path_factory.mktemp("guard")
        self.prefix, offline = without_network(self.guard)
        self.env = {
            **os.environ,
            **offline,
            "OPENAI_API_KEY": FAKE_KEY,
            "TASKMEM_CACHE": str(self.elsewhere / "cache.sqlite"),
            "PYTHONPATH": os.pathsep.join(
                [str(self.guard), str(ROOT), os.environ.get("PYTHONPATH", "")]
            ),
        }
        self.before = repo_files()
        self.done: dict[str, subprocess.CompletedProcess] = {}

    def run(self, name: str) -> subprocess.CompletedProcess:
        """Run notebook `name` (and those before it that have not run)."""
        for earlier in NOTEBOOKS[: NOTEBOOKS.index(name) + 1]:
            if earlier in self.done:
                continue
            proc = subprocess.run(
                [*self.prefix, sys.executable, "-m", "taskmem_lab.cli", "reproduce"]
                + ["--profile", "smoke", "--only", earlier, "--work", "out"],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=300,
                cwd=self.elsewhere,
            )
            self.done[earlier] = proc
            assert proc.returncode == 0, proc.stderr[-3000:]
            blocked = self.guard / "blocked.log"
            assert not blocked.exists(), f"{earlier} tried the network: {blocked.read_text()[:500]}"
        return self.done[name]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> SmokeRun:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    return SmokeRun(tmp_path_factory)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_smoke_notebook_runs_offline(smoke_run, name):
    """The smoke profile, notebook by notebook in order, with the network blocked."""
    smoke_run.run(name)


@pytest.fixture(scope="module")
def smoke(smoke_run):
    """(work folder, the runs' joined output, the repository's state before)."""
    runs = [smoke_run.run(name) for name in NOTEBOOKS]
    joined = types.SimpleNamespace(
        stdout="".join(p.stdout for p in runs), stderr="".join(p.stderr for p in runs)
    )
    return smoke_run.elsewhere / "out", joined, smoke_run.before


def outputs(work: Path, name: str) -> list[dict]:
    nb = json.loads((work / f"{name}.ipynb").read_text())
    return [o for c in nb["cells"] for o in c.get("outputs", [])]


def test_everything_lands_under_work_and_nothing_in_the_repository(smoke):
    work, _, before = smoke
    assert {p.name for p in work.glob("*.ipynb")} == {f"{n}.ipynb" for n in NOTEBOOKS}
    assert (work / "figures").is_dir() and (work / "runs" / "results").is_dir()
    assert repo_files() == before
    assert not (ROOT / "notebooks" / "runs").exists()


def test_every_notebook_runs_quietly(smoke):
    work, proc, _ = smoke
    assert "WARNING" not in proc.stdout + proc.stderr  # no kernel transport warnings
    for name in NOTEBOOKS:
        outs = outputs(work, name)
        assert not [o for o in outs if o.get("output_type") == "error"], name
        for o in outs:
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            assert "PosixPath(" not in text, (name, text[:200])
            assert "0%|" not in text, (name, text[:200])  # no stale progress bars
            assert "Warning" not in text, (name, text[:200])  # no library deprecation notices


def test_every_figure_has_data_and_provenance(smoke):
    work, _, _ = smoke
    figures = work / "figures"
    for stem in (
        "01_audio_timeline",
        "01_audio_waveform",
        "02_faces_gallery",
        "02_faces_timeline",
        "03_episodic_tokens",
        "04_qa_bars",
        "04_qa_errors",
        "05_ablations",
        "06_paper_accuracy",
        "07_adapt_curves",
    ):
        assert (figures / f"{stem}.png").stat().st_size > 5000 and (
            figures / f"{stem}.pdf"
        ).is_file()
        prov = json.loads((figures / f"{stem}.json").read_text())
        assert prov["notebook"] and "parameters" in prov and prov["taskmem_lab"]
    assert json.loads((figures / "03_episodic_tokens.json").read_text())["fake_model"] is True
    qa = (figures / "04_qa_table.md").read_text()
    assert "fake model" in qa
    errors = (figures / "04_qa_errors.md").read_text()
    assert "memorization_miss_pct" in errors and "egolife" in errors
    # the smoke profile re-judges EgoTempo with fake:flip2; 06 shows the kappa beside it
    assert "fake:flip2" in (figures / "04_qa_agreement.md").read_text()
    assert "fake:flip2" in (figures / "06_paper_kappa.md").read_text()
    metrics = [json.loads(p.read_text()) for p in (work / "runs" / "results").glob("*.json")]
    overall = [next(r for r in m["rows"] if r["group"] == "all") for m in metrics]
    assert any(r["coverage"] > 0 for r in overall)  # the reader answers: bars are visible
    table = (figures / "06_paper_main_table.md").read_text()
    assert "67.9" in table and "reproduced" in table
    # 01, 02 and 03 share one perception; 05's ablation settings add their own.
    assert len(list((work / "runs" / "talk" / "perception").iterdir())) == 3


def test_07_closes_the_loop_with_a_real_steer(smoke):
    """07_adapt: a steer trained by real DPO steps (rows only at its layer) changes what the
    tiny trained memorizer writes, and the QA table compares both memories, labelled fake."""
    import torch

    from taskmem_lab.lab.nbparams import AdaptNotebook
    from taskmem_lab.store import RunDir

    work, _, _ = smoke
    memories = work / "runs" / "talk" / "memory"
    (steer_file,) = (memories / "adapt_base" / "rollouts").rglob("steer.pt")
    matrix = torch.load(steer_file, weights_only=True)["matrix"]
    rows = [i for i in range(matrix.shape[0]) if bool(matrix[i].abs().sum() > 0)]
    assert rows == AdaptNotebook().layers
    steps = (steer_file.parent / "steps.jsonl").read_text().splitlines()
    assert len(steps) == AdaptNotebook().steps
    base = RunDir(memories / "adapt_base").finished()
    steered = RunDir(memories / "adapt_steered").finished()
    assert base and set(base) == set(steered)
    assert all(r.status == "ok" for r in [*base.values(), *steered.values()])
    assert any(base[k].episodic != steered[k].episodic for k in base)
    table = (work / "figures" / "07_adapt_qa.md").read_text()
    assert "| base" in table and "| steered" in table and "fake model" in table
    text = "".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for o in outputs(work, "07_adapt")
    )
    assert "entries changed by the steer:" in text and "tiny Idefics3, briefly trained" in text


def test_no_key_in_anything_smoke_wrote(smoke):
    work, proc, _ = smoke
    assert FAKE_KEY not in proc.stdout + proc.stderr
    for path in work.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_executed_03_exported_to_html_shows_the_memory(smoke, tmp_path):
    pytest.importorskip("nbconvert")
    work, _, _ = smoke
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "html",
            "--output-dir",
            str(tmp_path),
            str(work / "03_episodic.ipynb"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    html = (tmp_path / "03_episodic.html").read_text()
    assert "taskmem-browser" in html and "taskmem-frame" in html and "taskmem-entry" in html
    assert "[face_" in html and "Tasks arrived by then" in html
    assert "widget-view+json" not in html


def test_executed_04_exported_to_html_shows_the_results_browser(smoke, tmp_path):
    pytest.importorskip("nbconvert")
    work, _, _ = smoke
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output-dir",
         str(tmp_path), str(work / "04_qa.ipynb")],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    html = (tmp_path / "04_qa.html").read_text()
    assert html.count("taskmem-results-browser") == 3  # one per benchmark
    assert "taskmem-question" in html and "Context the answerer saw" in html
    assert "Second judge fake:flip2 disagrees" in html


def test_memory_browser_on_the_smoke_memory(smoke):
    from taskmem_lab.lab.widgets import MemoryBrowser

    work, _, _ = smoke
    browser = MemoryBrowser(work / "runs" / "talk" / "memory" / "notebook")
    assert browser.perception  # the perception the run used, with boxes
    html = browser.static_html()
    assert "fake model" in html and "<img" in html and "[face_" in html
    view = browser.widget()
    view.children[0].value = 1
    assert "Clip 1" in view.children[2].children[1].value
