"""Smoke test of the benchmark (bench/run.py): every section runs with tiny sizes and prints its rows.

Nothing here looks at timings or targets (DESIGN.md §9: the bench measures, the tests never time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hotfolder.testing import ComfyTestServer

ROOT = Path(__file__).resolve().parent.parent
# --restart-jobs 10: with 4, the last job could end before the restart, and no prompt ran after it
TINY = ["--quick", "--jobs", "5", "--jobs-per-server", "2", "--farm", "1,3:0.05", "--exec-time", "0.05",
        "--latency-files", "3", "--latency-gap", "0.05", "--backlog", "120", "--batch", "10",
        "--download-mb", "8", "--post-time", "0.1", "--restart-jobs", "10", "--restarts", "1"]


#: What each section must print: one run per section, so that the sections (which mostly wait on their
#: daemons and servers) run beside the other tests instead of one after another.
MEASURES = {
    "throughput": ("hotfolder / direct", "hotfolder / sequential"),
    "pool": ("S=1 T=0.05s makespan / ideal", "S=3 T=0.05s makespan / ideal", "S=3 T=0.05s daemon CPU per job",
             "S=3 T=0.05s server idle fraction", "the ramp (first drop to the last server's first start)",
             "0.1 s post-processor: makespan / ideal"),
    "latency": ("file closed after writing -> POST p50",),
    "memory": ("daemon peak RSS", "RSS added by a"),
    "backlog": ("per-job cost 120 / 100 waiting",),
    "restart": ("idle GPU after a server restart", "1 restart(s), lost_grace 15 s"),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("section", sorted(MEASURES))
def test_bench_runs_every_section_with_tiny_sizes_and_cleans_up(tmp_path: Path, section: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *TINY, "--only", section,
                             "--tmp", str(scratch)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    assert "ERROR" not in table
    for measure in MEASURES[section]:
        assert measure in table, table
    assert list(scratch.iterdir()) == []  # every temp folder removed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_runs_against_given_servers_with_the_seed_loop_beside_it(tmp_path: Path, comfy: ComfyTestServer) -> None:
    """``--servers-url`` (a test server standing in for a real one): the pool on the given servers with the
    measured execution time as T, and hotfolder beside the seed's sequential loop on the same server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *TINY, "--only", "throughput,pool",
                             "--servers-url", comfy.url, "--tmp", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    assert "ERROR" not in table
    assert f"on {comfy.url}" in table
    assert "S=1 (given servers, T measured" in table
    seed = next(line for line in table.splitlines() if "hotfolder / sequential" in line)
    assert ">= 1 " in seed  # the seed-loop target on real servers (>= 3 is for trivial jobs on test servers)


def test_every_bench_section_is_tested() -> None:
    sections = subprocess.run([sys.executable, "-c", "import runpy, sys; sys.argv = ['run']; "
                               "print(' '.join(runpy.run_path('bench/run.py', run_name='bench')['SECTIONS']))"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert sorted(sections.stdout.split()) == sorted(MEASURES), sections


def test_bench_rejects_an_unknown_section() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--only", "nope"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown section 'nope'" in result.stderr


def test_cpusplit_splits_a_py_spy_recording_by_thread_and_by_component(tmp_path: Path) -> None:
    """bench/cpusplit.py on py-spy's raw format: only the daemon's samples, each counted once by thread and
    once by the innermost library or hotfolder module."""
    daemon = 'process 2:"python -m hotfolder --config h.toml run"'
    lines = [
        f"{daemon};_bootstrap (threading.py:1002);Scheduler._worker (hotfolder/engine/scheduler.py:150);"
        "run_job (hotfolder/engine/job.py:70);post (requests/sessions.py:637);send (urllib3/connection.py:1) 6",
        f"{daemon};_bootstrap (threading.py:1002);Scheduler._output_worker (hotfolder/engine/scheduler.py:260);"
        "publish_folder (hotfolder/stages/publish.py:90);dumps (json/__init__.py:231) 3",
        f"{daemon};_run_module_as_main (<frozen runpy>:198);<module> (hotfolder/__main__.py:1);"
        "_main_loop (hotfolder/daemon.py:240);claim_file (hotfolder/stages/claim.py:93) 1",
        'process 1:"python bench/run.py";main (bench/run.py:10);sleep (time.py:1) 50',
    ]
    samples = tmp_path / "s.txt"
    samples.write_text("\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cpusplit.py"), str(samples)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("10 samples of the daemon"), out
    assert "60.0%  job workers" in out and "30.0%  output workers" in out and "10.0%  main thread" in out, out
    assert "60.0%  HTTP: requests, urllib3, http.client" in out and "30.0%  JSON" in out, out
    assert "10.0%  hotfolder/stages/claim.py" in out, out
