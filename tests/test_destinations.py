"""Per-scenario destinations and contact sheets in object storage.

``[destinations]`` in hotfolder.toml names the places results may go (folders, ``s3://bucket/prefix``), a
scenario's ``destination:`` picks one by name, and nothing else: the settings' checks, the parse-time check
(an unknown name fails the file, naming the allowed ones), and the real hotfolder process with the test
ComfyUI publishing into two buckets of moto's S3 server on loopback (tests/s3server.py) and a local folder,
each batch's contact sheet and gallery landing beside its job folders, in the bucket too.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder.config import load_settings
from hotfolder.destination import MAX_DESTINATIONS
from hotfolder.errors import ConfigError, ScenarioError
from hotfolder.stages import download, parse, publish, submit, track
from hotfolder.testing import ComfyTestServer
from tests.conftest import invoke_cli, make_settings, run_cli, wait_until

pytestmark = pytest.mark.timeout(300)

SECRET = "s3cr3t-never-in-a-log"


def settings_from(tmp_path: Path, toml: str, **env: str) -> Any:
    cfg = tmp_path / "hotfolder.toml"
    cfg.write_text(toml, encoding="utf-8")
    return load_settings(cfg, env=env, cwd=tmp_path)


# -- the settings ---------------------------------------------------------------------------------------------

def test_destinations_are_named_folders_or_store_urls_from_the_file_the_environment_or_the_command_line(
        tmp_path: Path) -> None:
    pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
    s = settings_from(tmp_path, 'outbox = "out"\n[destinations]\nrenders = "s3://renders/farm/"\n'
                                '[destinations.review]\nurl = "../review"\n')
    assert s.destination_names == ("outbox", "renders", "review")
    assert s.destination().folder == s.destination("outbox").folder == tmp_path / "out"
    renders, review = s.destination("renders"), s.destination("review")
    assert renders.url == "s3://renders/farm" and renders.staging_dir == tmp_path / "inbox" / ".hotfolder" / ".staging"
    assert review.url == "" and review.folder == (tmp_path / ".." / "review").resolve()
    assert review.staging_dir == review.folder / ".hotfolder-staging"
    with pytest.raises(KeyError):
        s.destination("elsewhere")
    s = load_settings(None, env={"HOTFOLDER_DESTINATIONS": "a=s3://renders/x, b = folder-b"}, cwd=tmp_path)
    assert [(d.name, d.url, d.folder.name) for d in s.destinations] == [("a", "s3://renders/x", ".staging"),
                                                                         ("b", "", "folder-b")]
    s = load_settings(None, env={}, overrides={"destinations": {"c": {"url": str(tmp_path / "c")}}}, cwd=tmp_path)
    assert s.destination("c").folder == tmp_path / "c"
    (tmp_path / "none").mkdir()
    assert load_settings(None, env={}, cwd=tmp_path / "none").destination_names == ("outbox",)


@pytest.mark.parametrize("toml, why", [
    ('[destinations]\noutbox = "x"\n', "'outbox' setting's own"),
    ('[destinations]\n"a/b" = "x"\n', "is not 1-64 letters"),
    ('[destinations]\n"" = "x"\n', "is not 1-64 letters"),
    (f'[destinations]\n{"n" * 65} = "x"\n', "is not 1-64 letters"),
    ('[destinations]\na = 5\n', "must be a folder or an s3://bucket/prefix URL"),
    ('[destinations]\na = ""\n', "must be a folder or an s3://bucket/prefix URL"),
    ('[destinations]\na = "x\\ty"\n', "must be a folder or an s3://bucket/prefix URL"),
    ('[destinations.a]\nurl = "x"\nregion = "eu"\n', "exactly one key, url"),
    ('[destinations.a]\n', "exactly one key, url"),
    ('destinations = "a"\n', "not a list of name=destination pairs"),
    ('destinations = 3\n', "expected a table of names"),
    ('[destinations]\na = "s3://Renders"\n', "not a valid bucket name"),
    (f'[destinations]\na = "s3://key:{SECRET}@renders/x"\n', "holds credentials"),
    ('[destinations]\na = "s3://renders/a/../b"\n', "'..' part"),
    ('[destinations]\na = "inbox/results"\n', "must be separate folders"),
    ('[destinations]\n' + "".join(f'd{n} = "s3://renders/{n}"\n' for n in range(MAX_DESTINATIONS + 1)),
     f"more than {MAX_DESTINATIONS}"),
])
def test_a_bad_destination_is_a_config_error_naming_the_key_and_why(tmp_path: Path, toml: str, why: str) -> None:
    pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, toml)
    text = str(caught.value)
    assert why in text and "destination" in text and SECRET not in text, text
    assert caught.value.where.get("key") == "destinations", caught.value.where


# -- the scenario ---------------------------------------------------------------------------------------------

def scenario(tmp_path: Path, text: str, allowed: tuple[str, ...] | None = ("outbox", "renders", "review")) -> list[Any]:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return parse.parse_scenario(path, path.read_bytes(), destinations=allowed)


def test_a_scenario_picks_an_allowed_destination_per_file_or_per_job(tmp_path: Path) -> None:
    specs = scenario(tmp_path, "destination: renders\nparams: {a: 1}\njobs:\n  - {}\n  - destination: outbox\n"
                               "  - destination: review\n")
    assert [spec.options.get("destination") for spec in specs] == ["renders", "outbox", "review"]
    assert "destination" not in scenario(tmp_path, "params: {a: 1}\n")[0].options


def test_a_destination_the_config_does_not_allow_fails_the_file_naming_it_the_key_and_the_allowed_names(
        tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        scenario(tmp_path, "params: {a: 1}\njobs:\n  - destination: renders\n  - destination: rendres\n")
    err = caught.value
    assert err.where["file"] == "sweep.yaml" and err.where["key"] == "destination"
    assert "'rendres'" in err.message and "allowed: outbox, renders, review" in err.message
    assert "job 2" in err.message and "Did you mean 'renders'?" in (err.hint or "")
    for text in ("destination: /etc\n", "destination: s3://other-bucket/x\n"):  # never a place of its own
        with pytest.raises(ScenarioError, match="hotfolder.toml does not define"):
            scenario(tmp_path, text + "params: {a: 1}\n")
    with pytest.raises(ScenarioError, match="a destination's name"):
        scenario(tmp_path, "destination: 5\nparams: {a: 1}\n")
    with pytest.raises(ScenarioError, match="allowed: outbox\\)"):
        scenario(tmp_path, "destination: renders\nparams: {a: 1}\n", allowed=("outbox",))


def test_check_reports_every_destination(project: Path, comfy: ComfyTestServer) -> None:
    (project / "shared").mkdir()
    (project / "hotfolder.toml").write_text('[destinations]\nrenders = "s3://renders/farm"\nhere = "shared"\n'
                                            'gone = "missing/folder"\n')
    result = invoke_cli("--server", comfy.url, "check", cwd=project)
    assert "ok   destination renders: s3://renders/farm (object storage, staged in" in result.stdout, result.stdout
    assert f"ok   destination here: {project / 'shared'}" in result.stdout, result.stdout
    assert f"FAIL destination gone: {project / 'missing' / 'folder'} does not exist" in result.stdout, result.stdout
    assert result.returncode == 1
    (project / "missing" / "folder").mkdir(parents=True)
    assert invoke_cli("--server", comfy.url, "check", cwd=project).returncode == 0


# -- end to end: two buckets and a folder ---------------------------------------------------------------------

boto3 = pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")

from tests._gallery import resolved_links, sheet_data  # noqa: E402
from tests._s3 import Store, running_store  # noqa: E402 - skips the module without moto[server]
from tests.test_contact_sheet import CHROMIUM, _Images, _load_in_chromium  # noqa: E402
from tests.test_faults import archived, kill  # noqa: E402
from tests.test_objectstore_daemon import daemon, drop, environment, no_secret  # noqa: E402

MATRIX = "params: {width: 8, height: 8}\nmatrix:\n  width: [8, 16, 24]\n  height: [8, 16]\n"  # 6 jobs


@pytest.fixture
def two_buckets(tmp_path: Path) -> Iterator[Store]:
    with running_store(tmp_path, ("renders", "review")) as server:
        yield server


def bucket(store: Store, name: str) -> dict[str, bytes]:
    return store.objects(name, prefix="")


def test_each_scenario_lands_in_the_destination_it_picks_with_its_contact_sheet_and_a_typo_fails_cleanly(
        project: Path, comfy: ComfyTestServer, two_buckets: Store) -> None:
    (project / "hotfolder.toml").write_text(
        'outbox = "outbox"\n[destinations]\nrenders = "s3://renders/farm"\nreview = "s3://review/proofs"\n'
        '[destinations.local]\nurl = "shared/results"\n')
    inbox = project / "inbox"
    (inbox / "sweep.yaml").write_text("destination: renders\n" + MATRIX)
    (inbox / "proof.yaml").write_text("destination: review\nparams: {width: 8, height: 8}\nrepeat: 2\n")
    (inbox / "here.yaml").write_text("destination: local\nparams: {width: 8, height: 8}\nrepeat: 2\n")
    (inbox / "typo.yaml").write_text("destination: rendres\nparams: {width: 8, height: 8}\n")
    (inbox / "single.yaml").write_text("destination: renders\nparams: {width: 8, height: 8}\n")
    env = environment(project, two_buckets)
    del env["HOTFOLDER_OUTBOX"]
    result = run_cli("--server", comfy.url, "-v", "run", "--once", cwd=project, env=env)
    text = result.stdout + result.stderr
    (project / "daemon.log").write_text(text)
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["here.yaml", "proof.yaml", "single.yaml",
                                                                   "sweep.yaml"], text

    # sweep.yaml: six jobs in the renders bucket, each sidecar after its files, then the sheet, index.html last
    requests = two_buckets.requests()  # hotfolder's (the reads below are the test's)
    renders, review = bucket(two_buckets, "renders"), bucket(two_buckets, "review")
    jobs = {key.split("/")[1] for key in renders if key.endswith(".json") and "-sheet/" not in key} - {"single"}
    assert jobs == {f"sweep-{n:03d}" for n in range(1, 7)}, sorted(renders)
    # single.yaml: one job, no sheet, and nothing read back from the bucket to learn that
    assert {key for key in renders if "single" in key} == {"farm/single/single.json", *(
        f"farm/single/{entry['file']}" for entry in json.loads(renders["farm/single/single.json"])["outputs"])}
    assert not [key for method, _, key, _ in requests if method == "GET" and "single" in key]
    puts = two_buckets.puts(bucket="renders")
    for job in jobs:
        sidecar = json.loads(renders[f"farm/{job}/{job}.json"])
        assert sidecar["published_as"] == job
        for entry in sidecar["outputs"]:
            assert len(renders[f"farm/{job}/{entry['file']}"]) == entry["size"]
            assert puts.index(f"farm/{job}/{entry['file']}") < puts.index(f"farm/{job}/{job}.json")
    sheet = "farm/sweep-sheet"
    assert {key for key in renders if key.startswith(sheet + "/")} >= {f"{sheet}/index.html",
                                                                         f"{sheet}/contact-sheet.png"}
    assert puts.count(f"{sheet}/index.html") == 1 and puts.index(f"{sheet}/index.html") == max(
        i for i, key in enumerate(puts) if key.startswith(sheet + "/")), puts[-8:]
    assert max(puts.index(f"farm/{job}/{job}.json") for job in jobs) < puts.index(f"{sheet}/contact-sheet.png")
    links = resolved_links(renders[f"{sheet}/index.html"], sheet)
    assert len(links) >= 1 + 2 * 6 and f"{sheet}/contact-sheet.png" in links
    missing = [link for link in links if link not in renders]
    assert not missing, missing  # every link of the gallery resolves to an object beside it
    data = sheet_data(renders[f"{sheet}/index.html"])
    assert (data["layout"], data["rows"], data["columns"]) == ("matrix", 3, 2)
    assert sorted(job["job"] for job in data["jobs"]) == sorted(jobs)

    # proof.yaml: in the review bucket only; here.yaml: in the local destination, sheet beside it
    assert {key.rsplit("/", 1)[0] for key in review} == {"proofs/proof-001", "proofs/proof-002", "proofs/proof-sheet"}
    assert not [key for key in renders if "proof" in key or "here" in key]
    local = project / "shared" / "results"
    assert sorted(p.name for p in local.iterdir()) == [".hotfolder-staging", "here-001", "here-002", "here-sheet"]
    assert not any((local / ".hotfolder-staging").iterdir())
    assert sorted(p.name for p in (project / "outbox").iterdir()) == []  # nothing chose the outbox

    # typo.yaml: failed before any job ran, with its error file naming the key and the allowed names
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["typo.yaml", "typo.yaml.error.json"]
    error = json.loads((inbox / "failed" / "typo.yaml.error.json").read_text())
    assert error["where"]["file"] == "typo.yaml" and error["where"]["key"] == "destination", error
    assert "allowed: outbox, renders, review, local" in error["message"], error
    assert "Did you mean 'renders'?" in error["hint"], error
    assert not [key for key in {**renders, **review} if "typo" in key]
    assert len(comfy.history()) == 6 + 2 + 2 + 1, "a job of typo.yaml reached the server"
    no_secret(project, two_buckets)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install the distribution's package (apt-get install chromium)")
def test_a_gallery_in_the_bucket_opens_from_a_downloaded_copy_with_every_image_loaded(
        project: Path, comfy: ComfyTestServer, two_buckets: Store) -> None:
    (project / "sweep.yaml").write_text(MATRIX)
    result = run_cli("--server", comfy.url, "process", "sweep.yaml", cwd=project, env=environment(project, two_buckets))
    assert result.returncode == 0, result.stdout + result.stderr
    copy = project / "downloaded"
    for key, body in bucket(two_buckets, "renders").items():
        (copy / key).parent.mkdir(parents=True, exist_ok=True)
        (copy / key).write_bytes(body)
    parsed = _Images()
    parsed.feed(_load_in_chromium(copy / "farm" / "sweep-sheet" / "index.html"))
    assert parsed.body.get("data-state") == "ready"
    assert len(parsed.images) == 7 and all(image.get("data-loaded") == "yes" for image in parsed.images), parsed.images


def test_a_daemon_killed_mid_upload_to_a_destination_resumes_there_without_uploading_twice(
        project: Path, comfy: ComfyTestServer, two_buckets: Store) -> None:
    (project / "hotfolder.toml").write_text('outbox = "s3://renders/farm"\n[destinations]\nreview = "s3://review/proofs"\n')
    drop(project, "sweep.yaml", "destination: review\n" + MATRIX)
    env = environment(project, two_buckets)
    del env["HOTFOLDER_OUTBOX"]
    first = daemon(project, comfy.url, dict(env, HOTFOLDER_FAILPOINT="mid_upload:3"))
    first.wait(120)
    assert first.returncode == -signal.SIGKILL, "the failpoint was not reached"
    second = daemon(project, comfy.url, env)
    try:
        wait_until(lambda: archived(project, ["sweep.yaml"]), timeout=120, message="the batch archived after the kill")
    finally:
        kill(second, signal.SIGTERM)
    assert (project / "inbox" / "done" / "sweep.yaml").exists()
    review = bucket(two_buckets, "review")
    jobs = {key.split("/")[1] for key in review if "-sheet/" not in key}
    assert jobs == {f"sweep-{n:03d}" for n in range(1, 7)}, sorted(review)
    puts = two_buckets.puts(bucket="review")
    twice = [key for key in set(puts) if puts.count(key) > 1]
    assert not twice, f"re-uploaded after the kill: {twice}"
    for job in jobs:
        for entry in json.loads(review[f"proofs/{job}/{job}.json"])["outputs"]:
            assert puts.index(f"proofs/{job}/{entry['file']}") < puts.index(f"proofs/{job}/{job}.json")
    assert bucket(two_buckets, "renders") == {}, "a job went to the outbox instead"
    assert "already there" in (project / "daemon.log").read_text(), "no publish was resumed"


def test_a_job_cut_off_after_its_publish_rename_finds_its_result_in_its_local_destination(
        project: Path, comfy: ComfyTestServer) -> None:
    from hotfolder.comfy.client import ComfyClient
    from hotfolder.destination import Outbox
    from hotfolder.templates import load, render
    from tests.stages.test_job_stages import job_context

    here = Outbox("here", project / "shared" / "results")
    events: list[Any] = []
    ctx = job_context(project, comfy, events, {})
    ctx.job.spec.options["destination"] = "here"
    settings = make_settings(project, comfy.url, destinations={"here": str(here.folder)})
    ctx.get_settings = lambda: settings
    workflow, _ = render.render_workflow(load.load_template(project / "templates", "invert"), ctx.job.spec)
    client = ComfyClient(settings.servers[0], poll_interval=0.5, history_grace=5.0)
    client.start()
    try:
        result = track.track_job(ctx, client, workflow, submit.submit_job(ctx, client, workflow))
        assert result is not None
        download.download_job(ctx, client, result)
        assert Path(ctx.job.staging or "").parent == here.staging_dir
        publish.publish_job(ctx, client, workflow, fresh=True)
        assert ctx.job.published == str(here.folder / "fox") and (here.folder / "fox" / "fox.json").is_file()
        # cut off after the rename, before the record said so: the next run finds it there, publishes nothing
        ctx.job.state, ctx.job.published = "downloaded", None
        publish.publish_job(ctx, client, workflow)
    finally:
        client.close()
    assert ctx.job.published == str(here.folder / "fox")
    assert sorted(p.name for p in here.folder.iterdir()) == [".hotfolder-staging", "fox"]
    assert not any((project / "outbox").iterdir())
