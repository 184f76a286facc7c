"""Tests for stage 3, parse: hotfolder.stages.parse."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from hotfolder.default_plugins import scenario_formats
from hotfolder.errors import ScenarioError
from hotfolder.spec import JobSpec
from hotfolder.stages import parse


def run(name: str, content: str | bytes, **kwargs: Any) -> list[JobSpec]:
    data = content.encode("utf-8") if isinstance(content, str) else content
    kwargs.setdefault("rng", random.Random(1234))
    return parse.parse_scenario(Path("/claimed/job-1") / name, data, **kwargs)


def fails(name: str, content: str | bytes, **kwargs: Any) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        run(name, content, **kwargs)
    err = info.value
    assert err.where["file"] == name
    assert name in err.message
    return err


# --------------------------------------------------------------------------------------------------
# formats


YAML_FULL = """
template: txt2img
name: red-fox
params:
  prompt: "a red fox in the snow, \\"cinematic\\""
  steps: 20
set:
  "6.text": "overrides the prompt node"
  "KSampler.cfg": 7.5
inputs:
  "LoadImage.image": photos/cat.png
postprocess: [upscale]
"""


def test_parse_scenario_reads_every_key_from_yaml() -> None:
    [job] = run("a.yaml", YAML_FULL)
    assert job.index == 1
    assert job.name == "red-fox"
    assert job.template == "txt2img"
    assert job.params == {"prompt": 'a red fox in the snow, "cinematic"', "steps": 20}
    assert job.set == {"6.text": "overrides the prompt node", "KSampler.cfg": 7.5}
    assert job.inputs == {"LoadImage.image": "photos/cat.png"}
    assert job.options == {"postprocess": ["upscale"]}
    assert job.line is None
    assert job.source == Path("/claimed/job-1/a.yaml")


def test_parse_scenario_reads_yml_json_and_toml_alike() -> None:
    as_json = json.dumps({"template": "t", "params": {"prompt": "p", "steps": 3}, "set": {"3.cfg": 2.5}})
    as_toml = 'template = "t"\n[params]\nprompt = "p"\nsteps = 3\n[set]\n"3.cfg" = 2.5\n'
    as_yaml = "template: t\nparams: {prompt: p, steps: 3}\nset: {'3.cfg': 2.5}\n"
    results = [run("x.json", as_json), run("x.toml", as_toml), run("x.yml", as_yaml), run("x.YAML", as_yaml)]
    for [job] in results:
        assert (job.name, job.template, job.params, job.set) == ("x", "t", {"prompt": "p", "steps": 3}, {"3.cfg": 2.5})


def test_parse_scenario_suffix_is_case_insensitive() -> None:
    [job] = run("Shout.JSON", '{"params": {"prompt": "p"}}')
    assert job.name == "Shout"


def test_parse_scenario_accepts_a_utf8_bom() -> None:
    [job] = run("bom.json", b'\xef\xbb\xbf{"params": {"prompt": "caf\xc3\xa9"}}')
    assert job.params == {"prompt": "café"}


def test_parse_scenario_default_template_applies_only_when_absent() -> None:
    [job] = run("a.json", '{"params": {}}', default_template="default")
    assert job.template == "default"
    [job] = run("a.json", '{"template": "mine"}', default_template="default")
    assert job.template == "mine"
    [job] = run("a.json", '{"params": {}}')
    assert job.template is None


def test_parse_scenario_toml_dates_become_iso_strings() -> None:
    [job] = run("d.toml", "[params]\nwhen = 2024-05-06\nat = 2024-05-06T07:08:09Z\n")
    assert job.params == {"when": "2024-05-06", "at": "2024-05-06T07:08:09+00:00"}


def test_parse_scenario_yaml_merge_keys_still_work() -> None:
    text = "jobs:\n  - params: &b {steps: 20, cfg: 7}\n  - params: {<<: *b, cfg: 5}\n"
    jobs = run("m.yaml", text)
    assert [j.params for j in jobs] == [{"steps": 20, "cfg": 7}, {"steps": 20, "cfg": 5}]


# --------------------------------------------------------------------------------------------------
# csv


def test_parse_scenario_csv_rows_become_jobs_with_coerced_cells_and_line_numbers() -> None:
    text = (
        "prompt,seed,cfg,hires,template,name,KSampler.denoise,6.text\n"
        "a fox,42,7.5,TRUE,t1,fox,0.5,hello\n"
        "\n"
        '"a cat, ""quoted""",-3,1e3,false,,cat,,\n'
    )
    jobs = run("batch.csv", text)
    assert [j.index for j in jobs] == [1, 2]
    fox, cat = jobs
    assert fox.params == {"prompt": "a fox", "seed": 42, "cfg": 7.5, "hires": True}
    assert fox.set == {"KSampler.denoise": 0.5, "6.text": "hello"}
    assert (fox.template, fox.name, fox.line) == ("t1", "fox", 2)
    assert cat.params == {"prompt": 'a cat, "quoted"', "seed": -3, "cfg": 1000.0, "hires": False}
    assert cat.set == {}
    assert (cat.template, cat.name, cat.line) == (None, "cat", 4)


def test_parse_scenario_csv_empty_cells_are_omitted_so_defaults_apply() -> None:
    [job] = run("e.csv", "prompt,steps,cfg\na fox,,\n", default_template="d")
    assert job.params == {"prompt": "a fox"}
    assert job.template == "d"


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("12", 12),
        ("-7", -7),
        ("007", 7),
        ("1.5", 1.5),
        ("-.5", -0.5),
        ("2.", 2.0),
        ("1e-3", 0.001),
        ("True", True),
        ("fAlSe", False),
        ("+5", "+5"),
        ("1,000", "1,000"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("12abc", "12abc"),
        ("yes", "yes"),
        ("9" * 5000, "9" * 5000),
    ],
)
def test_parse_scenario_csv_cell_coercion(cell: str, value: Any) -> None:
    [job] = run("c.csv", f'v\n"{cell}"\n')
    assert job.params == {"v": value}
    assert type(job.params["v"]) is type(value)


def test_parse_scenario_csv_name_and_template_columns_stay_strings() -> None:
    [job] = run("n.csv", "name,template,prompt\n123,007,x\n")
    assert (job.name, job.template) == ("123", "007")


def test_parse_scenario_csv_multiline_cell_keeps_the_starting_line() -> None:
    jobs = run("m.csv", 'prompt\n"line one\nline two"\nnext\n')
    assert [(j.params["prompt"], j.line) for j in jobs] == [("line one\nline two", 2), ("next", 4)]


def test_parse_scenario_csv_crlf_and_semicolons() -> None:
    jobs = run("s.csv", "prompt;steps\r\na fox;20\r\na cat;30\r\n")
    assert [j.params for j in jobs] == [{"prompt": "a fox", "steps": 20}, {"prompt": "a cat", "steps": 30}]


def test_parse_scenario_csv_skips_rows_of_empty_cells() -> None:
    jobs = run("s.csv", "prompt,steps\n,\n  ,  \na,1\n")
    assert [(j.params, j.line) for j in jobs] == [({"prompt": "a", "steps": 1}, 4)]


def test_parse_scenario_csv_row_with_wrong_cell_count_names_the_line() -> None:
    err = fails("bad.csv", "prompt,steps\na,1\nb,2,3\n")
    assert err.where["line"] == 3
    assert "line 3" in err.message and "3 cells" in err.message


def test_parse_scenario_csv_duplicate_header_is_an_error() -> None:
    err = fails("dup.csv", "prompt,seed,prompt\na,1,b\n")
    assert "'prompt'" in err.message
    assert err.where["line"] == 1


def test_parse_scenario_csv_unnamed_header_column_is_an_error() -> None:
    err = fails("h.csv", "prompt,,steps\na,b,1\n")
    assert err.where["column"] == 2


def test_parse_scenario_csv_bad_quoting_names_the_line() -> None:
    err = fails("q.csv", 'prompt,steps\nok,1\n"broken"x,2\n')
    assert err.where["line"] == 3
    assert err.__cause__ is not None


def test_parse_scenario_csv_header_only_has_no_jobs() -> None:
    err = fails("h.csv", "prompt,steps\n")
    assert "no jobs" in err.message


# --------------------------------------------------------------------------------------------------
# jsonl and txt


def test_parse_scenario_jsonl_lines_are_jobs_with_repeat_and_matrix() -> None:
    text = (
        '{"name": "one", "params": {"prompt": "a"}}\n'
        "\n"
        '   {"params": {"prompt": "b"}, "repeat": 2}\n'
        '{"params": {"prompt": "c"}, "matrix": {"cfg": [5, 7]}}\n'
    )
    jobs = run("b.jsonl", text)
    assert [(j.name, j.params, j.line) for j in jobs] == [
        ("one-001", {"prompt": "a"}, 1),
        ("b-002", {"prompt": "b"}, 3),
        ("b-003", {"prompt": "b"}, 3),
        ("b-004", {"prompt": "c", "cfg": 5}, 4),
        ("b-005", {"prompt": "c", "cfg": 7}, 4),
    ]


def test_parse_scenario_jsonl_bad_line_is_named_with_column() -> None:
    err = fails("b.jsonl", '{"params": {}}\n  {"params": {,}}\n')
    assert err.where["line"] == 2
    assert err.where["column"] == 15  # the comma, counted from the start of the raw line
    assert "line 2" in err.message


def test_parse_scenario_jsonl_line_must_be_an_object_without_jobs() -> None:
    assert fails("b.jsonl", '{"params": {}}\n[1, 2]\n').where["line"] == 2
    err = fails("b.jsonl", '{"jobs": [{}]}\n')
    assert err.where["line"] == 1 and "'jobs'" in err.message


def test_parse_scenario_jsonl_unknown_key_names_the_line() -> None:
    err = fails("b.jsonl", '{"params": {}}\n{"parmas": {}}\n')
    assert err.where["line"] == 2
    assert "'parmas'" in err.message
    assert "'params'" in (err.hint or "")


def test_parse_scenario_txt_one_prompt_per_line_with_comments() -> None:
    text = '# prompts for tonight\n  a red fox  \n\n# a comment\na cat with a "hat" 🐱\n'
    jobs = run("prompts.txt", text, default_template="txt2img")
    assert [(j.name, j.params, j.template, j.line) for j in jobs] == [
        ("prompts-001", {"prompt": "a red fox"}, "txt2img", 2),
        ("prompts-002", {"prompt": 'a cat with a "hat" 🐱'}, "txt2img", 5),
    ]


def test_parse_scenario_txt_with_only_comments_has_no_jobs() -> None:
    err = fails("p.txt", "# nothing\n# here\n")
    assert "no jobs" in err.message


# --------------------------------------------------------------------------------------------------
# expansion: jobs, matrix, repeat


def test_parse_scenario_jobs_entries_inherit_and_merge_the_top_level() -> None:
    text = """
template: base
params: {prompt: default, steps: 20}
set: {"KSampler.cfg": 7}
inputs: {"LoadImage.image": a.png}
jobs:
  - params: {prompt: a cat}
  - template: other
    params: {steps: 30}
    set: {"KSampler.cfg": 5, "3.denoise": 0.5}
    inputs: {"Mask.image": m.png}
"""
    first, second = run("b.yaml", text)
    assert (first.template, first.params, first.set, first.inputs) == (
        "base",
        {"prompt": "a cat", "steps": 20},
        {"KSampler.cfg": 7},
        {"LoadImage.image": "a.png"},
    )
    assert (second.template, second.params, second.set, second.inputs) == (
        "other",
        {"prompt": "default", "steps": 30},
        {"KSampler.cfg": 5, "3.denoise": 0.5},
        {"LoadImage.image": "a.png", "Mask.image": "m.png"},
    )
    assert [first.name, second.name] == ["b-001", "b-002"]


def test_parse_scenario_matrix_is_a_cartesian_product_in_key_order() -> None:
    text = "params: {prompt: p, cfg: 1}\nmatrix:\n  cfg: [5, 7]\n  sampler: [euler, dpmpp_2m, ddim]\n"
    jobs = run("m.yaml", text)
    assert [(j.params["cfg"], j.params["sampler"]) for j in jobs] == [
        (5, "euler"),
        (5, "dpmpp_2m"),
        (5, "ddim"),
        (7, "euler"),
        (7, "dpmpp_2m"),
        (7, "ddim"),
    ]
    assert [j.index for j in jobs] == [1, 2, 3, 4, 5, 6]


def test_parse_scenario_matrix_key_with_a_dot_is_a_set_address() -> None:
    jobs = run("m.yaml", "matrix:\n  KSampler.cfg: [5, 7]\n  steps: [10]\n")
    assert [(j.set, j.params) for j in jobs] == [
        ({"KSampler.cfg": 5}, {"steps": 10}),
        ({"KSampler.cfg": 7}, {"steps": 10}),
    ]


def test_parse_scenario_matrix_times_repeat_times_jobs_counts() -> None:
    text = (
        "matrix: {cfg: [5, 7], sampler: [a, b, c]}\nrepeat: 2\n"
        "jobs:\n  - params: {prompt: x}\n  - params: {prompt: y}\n    repeat: 1\n"
    )
    jobs = run("m.yaml", text)
    assert len(jobs) == 2 * 3 * 2 + 2 * 3 * 1
    # each combination's copies are next to each other
    assert [(j.params["prompt"], j.params["cfg"], j.params["sampler"]) for j in jobs[:4]] == [
        ("x", 5, "a"),
        ("x", 5, "a"),
        ("x", 5, "b"),
        ("x", 5, "b"),
    ]
    assert [j.name for j in jobs][-1] == "m-018"


def test_parse_scenario_entry_matrix_replaces_the_top_level_matrix() -> None:
    text = "matrix: {cfg: [5, 7]}\njobs:\n  - {}\n  - matrix: {steps: [1, 2, 3]}\n"
    jobs = run("m.yaml", text)
    assert [j.params for j in jobs] == [{"cfg": 5}, {"cfg": 7}, {"steps": 1}, {"steps": 2}, {"steps": 3}]


def test_parse_scenario_expanded_jobs_do_not_share_mutable_values() -> None:
    jobs = run("r.yaml", "params: {loras: [a, b]}\nrepeat: 2\n")
    jobs[0].params["loras"].append("c")
    assert jobs[1].params["loras"] == ["a", "b"]


def test_parse_scenario_caps_total_jobs() -> None:
    err = fails("big.yaml", "repeat: 10000\nmatrix: {cfg: [1, 2]}\n")
    assert "10000" in err.message
    assert len(run("ok.yaml", "repeat: 10000\n")) == 10_000


def test_parse_scenario_caps_total_jobs_across_csv_rows() -> None:
    text = "prompt\n" + "x\n" * 10_001
    assert "10000" in fails("big.csv", text).message


def test_parse_scenario_width_grows_beyond_999_jobs() -> None:
    jobs = run("w.yaml", "repeat: 1000\n")
    assert (jobs[0].name, jobs[-1].name) == ("w-0001", "w-1000")


# --------------------------------------------------------------------------------------------------
# seeds


def test_parse_scenario_random_seeds_are_drawn_per_expanded_job() -> None:
    text = (
        "params: {seed: random, noise_seed: RANDOM, Seed2: 5, other: random}\n"
        "set: {KSampler.seed: Random, 6.text: random}\nrepeat: 4\n"
    )
    jobs = run("s.yaml", text)
    seeds = [j.params["seed"] for j in jobs]
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert len(set(seeds)) == 4
    assert len({j.params["noise_seed"] for j in jobs}) == 4
    assert len({j.set["KSampler.seed"] for j in jobs}) == 4
    assert all(j.params["other"] == "random" and j.params["Seed2"] == 5 for j in jobs)
    assert all(j.set["6.text"] == "random" for j in jobs)


def test_parse_scenario_random_seeds_follow_the_given_rng() -> None:
    text = "params: {seed: random}\nrepeat: 3\n"
    first = [j.params["seed"] for j in run("s.yaml", text, rng=random.Random(7))]
    second = [j.params["seed"] for j in run("s.yaml", text, rng=random.Random(7))]
    assert first == second


def test_parse_scenario_random_seed_in_a_matrix_and_csv() -> None:
    jobs = run("s.yaml", "matrix: {seed: [random, random, 3]}\n")
    assert isinstance(jobs[0].params["seed"], int) and jobs[2].params["seed"] == 3
    [job] = run("s.csv", "prompt,seed,KSampler.noise_seed\nx,random,random\n")
    assert isinstance(job.params["seed"], int) and isinstance(job.set["KSampler.noise_seed"], int)


def test_parse_scenario_uses_system_random_without_rng() -> None:
    [job] = parse.parse_scenario(Path("s.json"), b'{"params": {"seed": "random"}}')
    assert isinstance(job.params["seed"], int)


# --------------------------------------------------------------------------------------------------
# names


def test_parse_scenario_single_job_is_named_after_the_file_stem() -> None:
    [job] = run("my scene.v2.json", "{}")
    assert job.name == "my scene.v2"


def test_parse_scenario_distinct_explicit_names_are_kept() -> None:
    jobs = run("b.yaml", "jobs:\n  - name: cat\n  - name: dog\n")
    assert [j.name for j in jobs] == ["cat", "dog"]


def test_parse_scenario_repeated_explicit_names_get_suffixes() -> None:
    jobs = run("b.yaml", "jobs:\n  - name: cat\n    repeat: 2\n  - name: dog\n")
    assert [j.name for j in jobs] == ["cat-001", "cat-002", "dog-003"]
    jobs = run("b.yaml", "jobs:\n  - name: Cat\n  - name: cat\n")
    assert [j.name for j in jobs] == ["Cat-001", "cat-002"]


def test_parse_scenario_mixed_named_and_unnamed_entries_all_get_suffixes() -> None:
    jobs = run("b.yaml", "jobs:\n  - name: cat\n  - {}\n")
    assert [j.name for j in jobs] == ["cat-001", "b-002"]


def test_parse_scenario_top_level_name_with_repeat_is_numbered() -> None:
    jobs = run("b.yaml", "name: fox\nrepeat: 2\n")
    assert [j.name for j in jobs] == ["fox-001", "fox-002"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../evil", "_evil"),
        ("..", "job"),
        (".", "job"),
        ("...hidden", "hidden"),
        ("/abs/path", "_abs_path"),
        ("a\\b", "a_b"),
        ("a..b", "a.b"),
        ("a/../../b", "a_._._b"),
        ("  spaced  ", "spaced"),
        ("tab\there", "tab_here"),
        ("nul\x00byte", "nul_byte"),
        ("bell\x07\x7f\x85", "bell___"),
        ("line\u2028sep", "line_sep"),
        ("", "job"),
        ("   ", "job"),
        ("Füchse im Schnee 🦊", "Füchse im Schnee 🦊"),
        ("家族👨‍👩‍👧", "家族👨‍👩‍👧"),
        (". .x", "x"),
    ],
)
def test_sanitize_job_name(raw: str, expected: str) -> None:
    assert parse.sanitize_job_name(raw) == expected


def test_sanitize_job_name_limits_characters_and_bytes() -> None:
    assert len(parse.sanitize_job_name("x" * 500)) == 120
    emoji = parse.sanitize_job_name("🦊" * 100)
    assert len(emoji.encode("utf-8")) <= 200 and set(emoji) == {"🦊"}
    assert len(parse.sanitize_job_name("x" * 500, reserve=4)) == 116


def test_parse_scenario_sanitises_names_from_the_file() -> None:
    [job] = run("a.json", '{"name": "../../etc/passwd"}')
    assert job.name == "_._etc_passwd"
    jobs = run("b.json", json.dumps({"name": "x" * 300, "repeat": 2}))
    assert all(len(j.name) == 120 and j.name.endswith(("-001", "-002")) for j in jobs)


def test_parse_scenario_names_that_collide_after_sanitising_get_suffixes() -> None:
    jobs = run("b.yaml", "jobs:\n  - name: a/b\n  - name: a_b\n")
    assert [j.name for j in jobs] == ["a_b-001", "a_b-002"]


def test_parse_scenario_names_are_unique_within_a_file() -> None:
    text = "jobs:\n" + "".join(f"  - name: n{i % 3}\n    repeat: 2\n" for i in range(9))
    names = [j.name for j in run("u.yaml", text)]
    assert len(set(names)) == len(names) == 18


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("content", [b"", b"   \n\t\n", b"\xef\xbb\xbf  \n"])
def test_parse_scenario_empty_file_is_an_error(content: bytes) -> None:
    err = fails("e.yaml", content)
    assert "is empty" in err.message
    assert err.hint


def test_parse_scenario_invalid_utf8_is_an_error_with_the_line() -> None:
    err = fails("bad.json", b'{\n"params": {"prompt": "caf\xe9"}}')
    assert "UTF-8" in err.message
    assert err.where["line"] == 2
    assert isinstance(err.__cause__, UnicodeDecodeError)


def test_parse_scenario_utf16_gets_a_specific_hint() -> None:
    err = fails("w.txt", "a fox\n".encode("utf-16"))
    assert "UTF-16" in (err.hint or "")


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml", ".csv", ".jsonl", ".txt"])
def test_parse_scenario_binary_garbage_is_a_scenario_error(suffix: str) -> None:
    rng = random.Random(99)
    garbage = bytes(rng.randrange(256) for _ in range(2000))
    with pytest.raises(ScenarioError):
        run("g" + suffix, garbage)


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml", ".jsonl"])
def test_parse_scenario_valid_utf8_garbage_is_a_scenario_error(suffix: str) -> None:
    with pytest.raises(ScenarioError):
        run("g" + suffix, '\x00\x01{[}]: : ,,\x02 = = "\n\x7f')


def test_parse_scenario_deep_nesting_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError):
        run("deep.json", '{"params": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}")


def test_parse_scenario_unknown_suffix_lists_supported_types() -> None:
    err = fails("a.xml", "<job/>")
    for suffix in (".json", ".yaml", ".yml", ".toml", ".csv", ".jsonl", ".txt"):
        assert suffix in (err.hint or "")


def test_parse_scenario_formats_registry_can_be_extended(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse_ini(path: Path, text: str) -> list[tuple[dict[str, Any], int | None]]:
        return [({"params": {"prompt": line}}, n) for n, line in enumerate(text.splitlines(), 1)]

    monkeypatch.setitem(scenario_formats.FORMATS, ".prompts", parse_ini)
    jobs = run("x.prompts", "a\nb\n")
    assert [(j.params, j.line) for j in jobs] == [({"prompt": "a"}, 1), ({"prompt": "b"}, 2)]


def test_parse_scenario_malformed_json_reports_line_and_column() -> None:
    err = fails("bad.json", '{\n  "params": {\n    "prompt": "x"\n    "steps": 2\n  }\n}\n')
    assert (err.where["line"], err.where["column"]) == (4, 5)
    assert "line 4, column 5" in err.message
    assert err.__cause__ is not None


def test_parse_scenario_malformed_yaml_reports_line_and_column() -> None:
    err = fails("bad.yaml", "params:\n  prompt: a\n   steps: 2\n")
    assert err.where["line"] == 3
    assert "column" in err.where
    assert "line 3" in err.message


def test_parse_scenario_unterminated_yaml_string_reports_a_line() -> None:
    err = fails("bad.yaml", 'params:\n  prompt: "a fox\n')
    assert err.where["line"] >= 2


def test_parse_scenario_yaml_with_two_documents_is_an_error() -> None:
    err = fails("two.yaml", "params: {}\n---\nparams: {}\n")
    assert err.where["line"] == 2  # the second '---'
    assert "single document" in err.message


def test_parse_scenario_malformed_toml_reports_line_and_column() -> None:
    err = fails("bad.toml", 'template = "t"\n[params]\nprompt = a fox\n')
    assert (err.where["line"], err.where["column"]) == (3, 10)
    assert "(at line" not in err.message
    assert "line 3, column 10" in err.message


def test_parse_scenario_duplicate_keys_are_errors() -> None:
    assert "'params'" in fails("d.json", '{"params": {}, "params": {}}').message
    err = fails("d.yaml", "params:\n  steps: 1\n  steps: 2\n")
    assert err.where["line"] == 3
    assert "'steps'" in err.message
    assert fails("d.toml", "a = 1\na = 2\n").where["line"] == 2


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("l.json", "[1, 2]", "a list"),
        ("s.json", '"hello"', "a string"),
        ("n.json", "null", "nothing"),
        ("l.yaml", "- a\n- b\n", "a list"),
        ("s.yaml", "just a prompt\n", "a string"),
        ("c.yaml", "# only a comment\n", "nothing"),
    ],
)
def test_parse_scenario_top_level_must_be_a_mapping(name: str, content: str, kind: str) -> None:
    err = fails(name, content)
    assert kind in err.message
    assert "jobs" in (err.hint or "")


def test_parse_scenario_unknown_top_level_key_is_named_with_a_suggestion() -> None:
    err = fails("t.yaml", "parmas: {prompt: a}\n")
    assert "'parmas'" in err.message
    assert "'params'" in (err.hint or "")
    assert "template, name, params, set, inputs, repeat, matrix, jobs, postprocess" in (err.hint or "")
    assert err.where["key"] == "parmas"


def test_parse_scenario_unknown_key_without_a_close_match_points_to_params() -> None:
    err = fails("t.yaml", "prompt: a fox\nsteps: 20\n")
    assert "'prompt', 'steps'" in err.message
    assert "params:" in (err.hint or "")


def test_parse_scenario_unknown_key_in_a_jobs_entry_is_named() -> None:
    err = fails("t.yaml", "jobs:\n  - params: {}\n  - prams: {}\n")
    assert "jobs[2]" in err.message
    assert err.where["key"] == "jobs[2].prams"


def test_parse_scenario_jobs_entries_cannot_nest_jobs() -> None:
    err = fails("t.yaml", "jobs:\n  - jobs: []\n")
    assert "'jobs'" in err.message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("template: 5", "template", "a string"),
        ("template: ''", "template", "empty"),
        ("name: [a]", "name", "a string"),
        ("name: 2024", "name", "a string"),
        ("params: [a, b]", "params", "a mapping"),
        ("params: a fox", "params", "a mapping"),
        ("set: 5", "set", "a mapping"),
        ("inputs: [a]", "inputs", "a mapping"),
        ("inputs: {LoadImage.image: 5}", "inputs.LoadImage.image", "relative file path"),
        ("repeat: two", "repeat", "a whole number"),
        ("repeat: 2.0", "repeat", "a whole number"),
        ("repeat: true", "repeat", "a whole number"),
        ("repeat: 0", "repeat", "1..10000"),
        ("repeat: 10001", "repeat", "1..10000"),
        ("matrix: [a]", "matrix", "a mapping"),
        ("matrix: {cfg: 5}", "matrix.cfg", "non-empty list"),
        ("matrix: {cfg: []}", "matrix.cfg", "non-empty list"),
        ("jobs: {a: 1}", "jobs", "a list"),
        ("jobs: []", "jobs", "empty"),
        ("jobs: [5]", "jobs[1]", "a mapping"),
        ("jobs: [{repeat: -1}]", "jobs[1].repeat", "1..10000"),
        ("params: {1: a}", "params", "non-empty strings"),
        ("params: {seed: .nan}", "params.seed", "finite"),
        ("params: {x: !!binary aGVsbG8=}", "params.x", "bytes"),
        ("params: {x: !!set {a, b}}", "params.x", "set"),
    ],
)
def test_parse_scenario_wrong_types_name_the_key(text: str, key: str, expected: str) -> None:
    err = fails("t.yaml", text + "\n")
    assert repr(key) in err.message
    assert expected in err.message


@pytest.mark.parametrize(
    "value", ["/etc/passwd", "../secret.png", "a/../../b.png", "C:\\x.png", "\\\\server\\share\\x.png"]
)
def test_parse_scenario_input_paths_must_stay_relative(value: str) -> None:
    err = fails("i.json", json.dumps({"inputs": {"LoadImage.image": value}}))
    assert err.where["key"] == "inputs.LoadImage.image"


def test_parse_scenario_lone_surrogate_is_an_error() -> None:
    err = fails("s.json", '{"params": {"prompt": "a \\ud800 b"}}')
    assert err.where["key"] == "params.prompt"


def test_parse_scenario_error_dict_has_stage_and_where() -> None:
    err = fails("bad.json", "{")
    out = err.to_dict()
    assert out["stage"] == "parse"
    assert out["where"]["file"] == "bad.json"
    assert out["where"]["line"] == 1
    assert out["hint"]


def test_parse_scenario_yaml_control_character_reports_line_and_column() -> None:
    err = fails("c.yaml", "params: {}\nna\x00me: x\n")
    assert (err.where["line"], err.where["column"]) == (2, 3)
    assert "#x0000" in err.message
