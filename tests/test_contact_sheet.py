"""Contact sheets and the gallery of a batch file (hotfolder/default_plugins/contact_sheet.py, gallery.py):
a real batch through the test ComfyUI, the sheet's geometry and labels against the sidecars, the gallery
in a real headless Chromium, the switch, single-job files, hostile names, Pillow missing, animations and
videos."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hotfolder.default_plugins import contact_sheet, gallery, sheet_layout
from hotfolder.events import Archived
from hotfolder.paths import safe_filename
from hotfolder.stages.parse import sanitize_job_name
from hotfolder.testing import ComfyTestServer
from tests._gallery import parse, sheet_data
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(180)

MATRIX = """\
template: txt2img
params: {prompt: "a fox", width: 16, height: 16}
matrix:
  steps: [10, 20]
  cfg: [5.0, 7.0, 9.0]
"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _process(project: Path, url: str, name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = run_cli("--server", url, "process", name, cwd=project, env=env)
    return result


def _sheet_data(folder: Path) -> dict[str, Any]:
    return sheet_data((folder / "index.html").read_text(encoding="utf-8"))


def _sidecar(project: Path, job: str) -> dict[str, Any]:
    return json.loads((project / "outbox" / job / f"{job}.json").read_text(encoding="utf-8"))


def _sheets(project: Path) -> list[Path]:
    return sorted(p for p in (project / "outbox").iterdir() if (p / "index.html").exists())


def _load_in_chromium(page: Path) -> str:
    """The DOM of ``page`` after it loaded in headless Chromium (the page's script marks each image)."""
    assert CHROMIUM
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--user-data-dir=" + str(page.parent.parent.parent / "chromium-profile"),
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class _Images(HTMLParser):
    """The <img> elements and <script> elements of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.scripts = 0
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "script":
            self.scripts += 1
        elif tag == "body":
            self.body = dict(attrs)


# --------------------------------------------------------------------------------------------------
# a real batch


def test_a_2x3_matrix_gets_a_sheet_whose_labels_and_cells_match_the_sidecars(
        project: Path, comfy: ComfyTestServer) -> None:
    (project / "m.yaml").write_text(MATRIX)
    result = _process(project, comfy.url, "m.yaml")
    assert result.returncode == 0, result.stderr
    (folder,) = _sheets(project)
    assert folder.parent == project / "outbox" and folder.name == "m-sheet"
    data = _sheet_data(folder)
    geometry = data["sheet"]
    assert data["layout"] == "matrix" and (data["rows"], data["columns"]) == (2, 3)
    assert data["row_axis"] == "steps" and data["column_axes"] == ["cfg"]
    with Image.open(folder / contact_sheet.SHEET_NAME) as sheet:
        assert list(sheet.size) == geometry["size"]
        pixels = sheet.convert("RGB")
    labels = {(label["role"], label["index"]): label for label in geometry["labels"]}
    assert labels[("title", None)]["text"] == "m.yaml"
    cells = {cell["job"]: cell for cell in geometry["cells"]}
    assert sorted(cells) == [f"m-{n:03d}" for n in range(1, 7)]
    seen = set()
    for job, cell in cells.items():
        sidecar = _sidecar(project, job)
        assert sidecar["matrix"] == {"steps": sidecar["params"]["steps"], "cfg": sidecar["params"]["cfg"]}
        row, column = labels[("row", cell["row"])], labels[("column", cell["column"])]
        assert row["text"] == row["shown"] == f"steps={sidecar['params']['steps']}"
        assert column["text"] == column["shown"] == f"cfg={sidecar['params']['cfg']}"
        x0, y0, x1, y1 = cell["box"]
        assert x1 - x0 == y1 - y0 == contact_sheet.CELL
        assert row["box"][2] <= x0 and y0 <= (row["box"][1] + row["box"][3]) / 2 <= y1  # left of its row
        assert column["box"][3] <= y0 and x0 <= column["box"][0] < x1  # above its column
        # the cell holds the job's own image, scaled to the cell
        (output,) = sidecar["outputs"]
        with Image.open(project / "outbox" / job / output["file"]) as image:
            expected = image.convert("RGB").resize((contact_sheet.CELL, contact_sheet.CELL), Image.Resampling.NEAREST)
        assert pixels.crop((x0, y0, x1, y1)).tobytes() == expected.tobytes(), job
        seen.add((cell["row"], cell["column"]))
    assert seen == {(r, c) for r in range(2) for c in range(3)}
    # the geometry: a row label gutter, a title and a header line, then 2 x 3 cells with gaps
    left = min(cell["box"][0] for cell in geometry["cells"])
    top = min(cell["box"][1] for cell in geometry["cells"])
    step = contact_sheet.CELL + contact_sheet.PAD
    assert geometry["size"] == [left + 3 * step, top + 2 * step]
    jobs = {job["job"]: job for job in data["jobs"]}
    for job, cell in cells.items():
        assert jobs[job]["cell"] == [cell["row"], cell["column"]]
        assert jobs[job]["sidecar"] == f"../{job}/{job}.json"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install the distribution's package (apt-get install chromium)")
@pytest.mark.slow
def test_the_gallery_opens_in_headless_chromium_with_every_image_loaded(project: Path, comfy: ComfyTestServer) -> None:
    (project / "m.yaml").write_text(MATRIX)
    assert _process(project, comfy.url, "m.yaml").returncode == 0
    (folder,) = _sheets(project)
    dom = _load_in_chromium(folder / "index.html")
    parsed = _Images()
    parsed.feed(dom)
    assert parsed.body.get("data-state") == "ready", dom[:3000]
    sources = [image["src"] for image in parsed.images]
    assert len(sources) == 7, sources  # the sheet and one image per job
    assert all(image.get("data-loaded") == "yes" for image in parsed.images), parsed.images
    assert parsed.body["data-images-loaded"] == "7"
    assert "contact-sheet.png" in sources
    for n in range(1, 7):
        job = f"m-{n:03d}"
        (output,) = _sidecar(project, job)["outputs"]
        assert f"../{job}/{output['file']}" in sources
        assert f'href="../{job}/{job}.json"' in dom


# --------------------------------------------------------------------------------------------------
# when there is none


@pytest.mark.slow
def test_contact_sheet_false_makes_none_and_a_single_job_file_makes_none(project: Path, comfy: ComfyTestServer) -> None:
    (project / "m.yaml").write_text(MATRIX)
    result = _process(project, comfy.url, "m.yaml", env={"HOTFOLDER_CONTACT_SHEET": "false"})
    assert result.returncode == 0, result.stderr
    assert len(list((project / "outbox").iterdir())) == 7  # six jobs and the staging folder
    assert _sheets(project) == []
    (project / "one.yaml").write_text("template: txt2img\nparams: {prompt: one, width: 16, height: 16}\n")
    assert _process(project, comfy.url, "one.yaml").returncode == 0
    assert (project / "outbox" / "one").is_dir() and _sheets(project) == []
    # the same with two jobs makes one: a wrapped grid labelled by what varies (not the drawn seeds'
    # absence: the seeds are fixed here, so only the prompt varies)
    (project / "two.csv").write_text("template,prompt,seed,width,height\ntxt2img,a fox,1,16,16\ntxt2img,a cat,1,16,16\n")
    assert _process(project, comfy.url, "two.csv").returncode == 0
    (folder,) = _sheets(project)
    data = _sheet_data(folder)
    assert data["layout"] == "grid" and [job["labels"] for job in data["jobs"]] == [["prompt=a fox"], ["prompt=a cat"]]
    cells = [label for label in data["sheet"]["labels"] if label["role"] == "cell"]
    assert [(label["index"], label["text"]) for label in cells] == [(0, "prompt=a fox"), (1, "prompt=a cat")]


# --------------------------------------------------------------------------------------------------
# hostile names


HOSTILE = [
    {"name": "<img src=x onerror=alert(1)>", "prompt": "</script><script>alert(1)</script>"},
    {"name": "50% off #1 ?q=a&b", "prompt": "\"quotes\" & 'apostrophes'"},
    {"name": "..%2F..%2Fetc", "prompt": "../../etc/passwd"},
    {"name": "renard 🦊 \u202eevil", "prompt": "<!-- -->"},
]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install the distribution's package (apt-get install chromium)")
@pytest.mark.slow
def test_hostile_names_and_values_neither_break_the_page_nor_leave_the_outbox(
        project: Path, comfy: ComfyTestServer) -> None:
    lines = [json.dumps({"template": "txt2img", "name": job["name"],
                         "params": {"prompt": job["prompt"], "width": 16, "height": 16}}) for job in HOSTILE]
    name = "<b>a&b<\\b> #1 %41 'x'.jsonl"
    (project / name).write_text("\n".join(lines) + "\n")
    result = _process(project, comfy.url, name)
    assert result.returncode == 0, result.stderr
    (folder,) = _sheets(project)
    assert folder.parent == project / "outbox"
    assert not [p for p in project.iterdir() if p.name not in {"inbox", "outbox", "templates", "plugins", name}]
    data = _sheet_data(folder)
    assert data["file"] == name and data["layout"] == "grid" and len(data["jobs"]) == 4
    prompts = sorted(label for job in data["jobs"] for label in job["labels"] if label.startswith("prompt="))
    assert prompts == sorted(f"prompt={job['prompt']}" for job in HOSTILE)
    dom = _load_in_chromium(folder / "index.html")
    parsed = _Images()
    parsed.feed(dom)
    assert parsed.body.get("data-state") == "ready", dom[:3000]
    assert parsed.scripts == 2  # the data block and the page's own: nothing injected
    assert len(parsed.images) == 5 and all(image.get("data-loaded") == "yes" for image in parsed.images), parsed.images
    for job in data["jobs"]:  # every link resolves to the job's own sidecar, inside the outbox
        target = (folder / unquote(job["sidecar"])).resolve()
        assert target.parent.parent == (project / "outbox").resolve() and target.is_file()


# --------------------------------------------------------------------------------------------------
# Pillow missing, animations and videos


def test_without_pillow_the_gallery_is_written_with_one_log_line_and_no_job_fails(
        project: Path, comfy: ComfyTestServer, tmp_path: Path) -> None:
    fake = tmp_path / "no-pillow"
    (fake / "PIL").mkdir(parents=True)
    (fake / "PIL" / "__init__.py").write_text("raise ImportError('no Pillow here')\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    (project / "m.yaml").write_text(MATRIX)
    result = _process(project, comfy.url, "m.yaml", env={**env, "HOTFOLDER_LOG_FORMAT": "text"})
    assert result.returncode == 0, result.stderr
    (folder,) = _sheets(project)
    assert not (folder / contact_sheet.SHEET_NAME).exists()
    assert _sheet_data(folder)["sheet"] is None and len(_sheet_data(folder)["jobs"]) == 6
    assert result.stderr.count("Pillow is not installed") == 1, result.stderr


def _job(outbox: Path, name: str, index: int, files: dict[str, bytes], params: dict[str, Any]) -> str:
    folder = outbox / name
    folder.mkdir()
    for file, data in files.items():
        (folder / file).write_bytes(data)
    sidecar = {"job_index": index, "jobs_in_file": 2, "name": name, "params": params,
               "outputs": [{"file": file} for file in files]}
    (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return str(folder)


def _gif(tmp_path: Path) -> bytes:
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path.read_bytes()


def _mp4() -> bytes:
    """The boxes of an MP4 with one video track, enough for hotfolder.media to call it a video."""
    def box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    hdlr = box(b"hdlr", bytes(8) + b"vide" + bytes(12) + b"\0")
    trak = box(b"trak", box(b"mdia", hdlr))
    return box(b"ftyp", b"isom" + bytes(4) + b"isom") + box(b"moov", trak)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install the distribution's package (apt-get install chromium)")
def test_animations_get_a_first_frame_poster_and_videos_a_tile_with_a_video_element(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    published = [_job(outbox, "anim", 1, {"a.gif": _gif(tmp_path)}, {"kind": "gif"}),
                 _job(outbox, "clip", 2, {"c.mp4": _mp4()}, {"kind": "mp4"})]
    folder = contact_sheet.make_sheet("media.jsonl", published, outbox)
    assert folder is not None
    with Image.open(folder / "posters" / "anim.png") as poster:
        assert poster.convert("RGB").getpixel((4, 4)) == (255, 0, 0)  # the first frame
    html = (folder / "index.html").read_text()
    assert '<video controls preload="none" src="../clip/c.mp4">' in html and "▶ c.mp4" in html
    assert '<a href="../anim/a.gif"><img src="posters/anim.png"' in html
    data = _sheet_data(folder)
    cells = {cell["job"]: cell["box"] for cell in data["sheet"]["cells"]}
    with Image.open(folder / contact_sheet.SHEET_NAME) as sheet:
        x0, y0, _, _ = cells["anim"]
        assert sheet.convert("RGB").getpixel((x0 + 10, y0 + 10)) == (255, 0, 0)
    parsed = _Images()
    parsed.feed(_load_in_chromium(folder / "index.html"))
    assert len(parsed.images) == 2 and all(image.get("data-loaded") == "yes" for image in parsed.images)


def test_a_broken_sidecar_or_image_is_left_out_and_a_failure_is_logged_never_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    good = _job(outbox, "good", 1, {"g.png": b"\x89PNG\r\n\x1a\n" + bytes(40)}, {"p": 1})
    bad = outbox / "bad"
    bad.mkdir()
    (bad / "bad.json").write_text("{not json")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    folder = contact_sheet.make_sheet("x.csv", [good, str(bad), str(outside)], outbox)
    assert folder is not None and [job["job"] for job in _sheet_data(folder)["jobs"]] == ["good"]
    assert "not a job folder of the outbox" in caplog.text and "no readable sidecar" in caplog.text
    assert "good/g.png is not a readable image" in caplog.text
    # a failure while making it (here: the staging folder is a file) is logged with the file's name
    caplog.clear()
    other = tmp_path / "other"
    other.mkdir()
    jobs = (_job(other, "a", 1, {}, {"p": 1}), _job(other, "b", 2, {}, {"p": 2}))
    (other / ".hotfolder-staging").write_text("")
    contact_sheet._queue("y.csv", jobs, other)
    assert contact_sheet.wait_idle()
    assert "[y.csv] no contact sheet" in caplog.text
    assert sorted(p.name for p in other.iterdir()) == [".hotfolder-staging", "a", "b"]


def test_the_hook_skips_only_a_file_that_gave_one_job_and_leaves_an_unreadable_sidecar_to_the_sheet_thread(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    settings = SimpleNamespace(contact_sheet=True, outbox=outbox, outbox_url=None)

    def archived(file: str, *published: str) -> list[str]:
        contact_sheet.track_event(Archived(file=file, job_id="j", failed=False, path=None, published=published),
                                  settings)
        assert contact_sheet.wait_idle()
        return sorted(p.name for p in outbox.iterdir() if p.name.endswith("-sheet"))

    png = {"g.png": b"\x89PNG\r\n\x1a\n" + bytes(40)}
    one = _job(outbox, "one", 1, png, {"p": 1})
    sidecar = json.loads(Path(one, "one.json").read_text())
    Path(one, "one.json").write_text(json.dumps({**sidecar, "jobs_in_file": 1}))
    assert archived("one.csv", one) == []
    # one published job of a file that gave two (the other failed) still gets its sheet
    assert archived("two.csv", _job(outbox, "two", 1, png, {"p": 1})) == ["two-sheet"]
    broken = outbox / "broken"
    broken.mkdir()
    (broken / "broken.json").write_text("{not json")
    assert archived("broken.csv", str(broken)) == ["two-sheet"] and "broken has no readable sidecar" in caplog.text


# --------------------------------------------------------------------------------------------------
# the layout and the page, alone


def _entry(name: str, index: int, **sections: dict[str, Any]) -> sheet_layout.Entry:
    return sheet_layout.Entry(name, Path(name), {"job_index": index, **sections}, [("a.png", "image")])


def test_three_axes_put_the_first_in_rows_and_the_rest_with_repeat_copies_in_columns() -> None:
    entries = []
    for a in (1, 2):
        for b in ("x", "y"):
            for c in (True, False):
                for _copy in range(2):
                    matrix = {"a": a, "b": b, "c": c}
                    entries.append(_entry(f"j{len(entries)}", len(entries), matrix=matrix, params=dict(matrix)))
    plan = sheet_layout.plan(entries)
    assert plan.layout == "matrix" and (plan.rows, plan.columns) == (2, 8)
    assert plan.row_labels == ["a=1", "a=2"]
    assert plan.column_labels[:4] == ["b=x, c=true", "b=x, c=true #2", "b=x, c=false", "b=x, c=false #2"]
    assert plan.cells[0] == (0, 0) and plan.cells[1] == (0, 1) and plan.cells[15] == (1, 7)
    assert len(set(plan.cells.values())) == len(entries)
    # one axis is a wrapped grid captioned by what varies; a param that is an axis is shown once
    one = [_entry(f"k{n}", n, matrix={"cfg": n}, params={"cfg": n, "seed": 7}) for n in range(5)]
    plan = sheet_layout.plan(one)
    assert plan.layout == "grid" and (plan.rows, plan.columns) == (2, 3)
    assert [e.labels for e in one] == [[f"cfg={n}"] for n in range(5)]


NAMES = st.text(st.one_of(st.characters(), st.sampled_from("<>&\"'%#?/\\ \u202e🦊")), min_size=1, max_size=40)


@given(jobs=st.lists(st.tuples(NAMES, NAMES, NAMES), min_size=2, max_size=4,
                     unique_by=lambda job: sanitize_job_name(job[0])))
@settings(max_examples=100)
def test_any_names_and_values_stay_text_and_links_point_at_their_own_files(
        jobs: list[tuple[str, str, str]]) -> None:
    entries = []
    for index, (job, file, value) in enumerate(jobs):
        name, output = sanitize_job_name(job), safe_filename(file, fallback="out") + ".png"  # as named by hotfolder
        entries.append(sheet_layout.Entry(name, Path(name), {"job_index": index, "params": {"p": value, "i": index}},
                                          [(output, "image")]))
    plan = sheet_layout.plan(entries)
    page = gallery.page("a</script>.csv", entries, plan, None, None)
    parsed = parse(page)
    assert parsed.scripts == 2 and parsed.strong == [e.name for e in entries]
    data = sheet_data(page)
    assert [job["job"] for job in data["jobs"]] == [e.name for e in entries]
    expected = {("..", e.name, e.outputs[0][0]) for e in entries} | {("..", e.name, e.name + ".json") for e in entries}
    assert {tuple(unquote(part) for part in link.split("/")) for link in parsed.links} == expected
    assert all(value in parsed.values for _, _, value in jobs)
