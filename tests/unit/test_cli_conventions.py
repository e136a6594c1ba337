"""The command line's conventions: --version, -v/-q anywhere, -vv console I/O, help with examples and exit codes,
`inputs`, "did you mean", JSON with a schema version everywhere, a JSON Schema of playbooks, shell completion."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

import recovery
from recovery.audit.render import render_json
from recovery.channels import dialogue as console
from recovery.channels.dialogue import ConsoleSession
from recovery.cli.log import CONSOLE_IO, setup_logging, without_debug_output
from recovery.cli.main import build_parser, main, parse_arguments, subcommands
from recovery.engine.catalog import step_types
from recovery.errors import UsageError
from recovery.safety.redact import Secret
from recovery.ssh.keys import generate_keypair
from tests.unit import fake_steps
from tests.unit.fake_console import DEBIAN, FakeConsole
from tests.unit.fake_steps import TWO_STEPS

ROOT = Path(__file__).resolve().parents[2]
SERIAL = ROOT / "playbooks" / "restore-access-serial.yaml"
SHIPPED = sorted((ROOT / "playbooks").glob("*.yaml"))
TOKEN = "tok-123456789"
DIRECT = [
    "-e", f"console_url=ws://127.0.0.1:9/?token={TOKEN}", "-e", "ssh_host=127.0.0.1", "-e", "user=ops",
    "-e", "trust_first_use=true",
]
assert fake_steps  # registers test.record


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def book(tmp_path: Path) -> Path:
    path = tmp_path / "book.yaml"
    path.write_text(TWO_STEPS)
    return path


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its path ("run", "lab up"), the top-level one as ""."""
    found = {"": build_parser()}
    for path, parser in list(found.items()):
        for name, sub in subcommands(parser).items():
            found[f"{path} {name}".strip()] = sub
            found.update({f"{name} {n}": s for n, s in subcommands(sub).items()})
    return found


# --- --version, -v and -q anywhere ----------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, "--version") == (0, f"recovery {recovery.__version__}\n", "")


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v", "validate", "x.yaml"], 1),
        (["validate", "x.yaml", "-vv"], 2),
        (["-v", "run", "x.yaml", "-vv"], 3),
        (["run", "-vvv", "x.yaml"], 3),
        (["lab", "status", "-v"], 1),
        (["-vv", "lab", "down"], 2),
        (["steps"], 0),
    ],
)
def test_verbosity_counts_before_and_after_the_command(argv: list[str], verbose: int) -> None:
    args = parse_arguments(argv)
    assert (args.verbose, args.quiet) == (verbose, False)


@pytest.mark.parametrize(
    "argv", [["-q", "steps"], ["steps", "-q"], ["lab", "up", "--quiet"], ["audit", "-q", "--inventory", "x"]]
)
def test_quiet_is_taken_before_and_after_the_command(argv: list[str]) -> None:
    assert parse_arguments(argv).quiet


def test_quiet_and_verbose_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="-q and -v"):
        parse_arguments(["-q", "steps", "-v"])


def test_quiet_run_prints_no_progress_or_notes_but_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, "run", str(book(tmp_path)), "--journal", str(tmp_path / "runs"))
    assert code == 0
    assert "journal" in err  # the progress lines
    code, out, err = run_main(capsys, "run", str(book(tmp_path)), "--journal", str(tmp_path / "runs"), "-q")
    assert code == 0
    assert out.startswith("# Recovery ")
    assert "journal" not in err
    code, out, err = run_main(
        capsys, "run", "-q", str(SERIAL), "--dry-run", "--journal", str(tmp_path / "runs"), *DIRECT
    )
    assert code == 0
    assert "Plan for" in out
    assert err == ""  # no "visible in the process list" note
    assert logging.getLogger().level == logging.ERROR


def test_quiet_audit_prints_no_progress_or_summary_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_keypair(tmp_path / "audit_key")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"defaults: {{user: ops, key: {key.private_path}}}\nhosts:\n  - name: pending\n")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run_main(capsys, "audit", "--inventory", str(inventory))
    assert (code, "1 host" in err) == (1, True)  # the summary line, on a terminal
    code, out, err = run_main(capsys, "audit", "--inventory", str(inventory), "-q")
    assert (code, err) == (1, "")
    assert "pending" in out  # the report


# --- -vv shows the console I/O, masked -------------------------------------------------------


def test_the_console_io_logger_is_the_one_log_names() -> None:
    assert console.io_log.name == CONSOLE_IO


def login_with_an_echoing_guest() -> None:
    """A guest that prints the password back, delivered one character per read."""
    password = Secret("s3cret-pass", "<password>")
    guest = dataclasses.replace(DEBIAN, after_password="\r\nMOTD: s3cret-pass is old\r\n" + DEBIAN.prompt)
    ConsoleSession(FakeConsole(guest=guest, cuts=range(1, 4000))).login("ops", password, timeout=5)


def test_vv_shows_what_is_typed_and_read_on_the_console_with_secrets_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging(2)
    login_with_an_echoing_guest()
    err = capsys.readouterr().err
    assert "recovery.console.io: <<< vm login: " in err
    assert "recovery.console.io: >>> ops" in err
    assert "recovery.console.io: >>> <password>" in err
    assert "MOTD: *** is old" in err  # split over eleven reads, still scrubbed
    assert "s3cret-pass" not in err
    assert "\x1b" not in err  # the VM's escape codes never reach the operator's terminal raw


@pytest.mark.parametrize("verbosity", [0, 1])
def test_below_vv_the_console_io_is_not_shown(verbosity: int, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(verbosity)
    login_with_an_echoing_guest()
    assert "console.io" not in capsys.readouterr().err


def test_no_console_io_once_debug_output_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(2)
    without_debug_output("a secret shorter than 4 characters is held")
    login_with_an_echoing_guest()
    assert "console.io" not in capsys.readouterr().err


def test_vv_leaves_the_libraries_quiet_and_vvv_does_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(book(tmp_path)), "--journal", str(tmp_path / "runs"), "-vv"]) == 0
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("openstack").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("paramiko").getEffectiveLevel() == logging.CRITICAL
    assert main(["-vvv", "steps"]) == 0
    assert logging.getLogger("openstack").getEffectiveLevel() == logging.DEBUG


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(all_parsers()))
def test_every_help_has_a_description_examples_and_exit_codes(path: str) -> None:
    text = all_parsers()[path].format_help()
    parts = text.split("\n\n")
    assert len(parts[1].split()) > 8, "a description of a sentence or more"
    assert re.search(r"\nexamples:\n  .*\brecovery\b", text), "an example"
    codes = re.search(r"\nexit codes:\n((?:  .*\n?)+)", text)
    assert codes, text
    assert all(re.match(r"  (\d+ |as each)", line) for line in codes.group(1).splitlines())


def test_every_command_is_listed_in_the_top_level_help() -> None:
    text = build_parser().format_help()
    for name in subcommands(build_parser()):
        assert re.search(rf"^    {name} ", text, re.MULTILINE), name


# --- recovery inputs ------------------------------------------------------------------------


def test_inputs_lists_inputs_secrets_and_their_sources(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "inputs", str(SERIAL))
    assert code == 0
    assert re.search(r"^  user \(string; required\): ", out, re.MULTILINE)
    assert re.search(r"^  ssh_port \(integer; default 22\)", out, re.MULTILINE)
    assert "from: -e console_url=VALUE, -e console_url=@FILE, environment variable RECOVERY_CONSOLE_URL" in out
    assert re.search(r"^  console_password \(required\)", out, re.MULTILINE)
    assert "--secret console_password=@FILE, environment variable RECOVERY_CONSOLE_PASSWORD, a prompt" in out


def test_inputs_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "inputs", "--json", str(SERIAL))
    assert code == 0
    document = json.loads(out)
    assert document["schema"] == 1
    inputs = {item["name"]: item for item in document["inputs"]}
    assert inputs["console_url"]["sensitive"] is True
    assert inputs["console_url"]["env"] == "RECOVERY_CONSOLE_URL"
    assert [source["kind"] for source in inputs["console_url"]["sources"]] == ["option", "file", "env"]
    assert inputs["user"]["required"] is True
    assert inputs["key_type"]["choices"] == ["ed25519", "rsa"]
    (secret,) = document["secrets"]
    assert [source["kind"] for source in secret["sources"]] == ["file", "env", "prompt"]


def test_inputs_of_an_invalid_playbook_is_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "inputs", str(ROOT / "tests" / "cases" / "invalid" / "broken-yaml.yaml"))
    assert code == 2
    assert "broken-yaml.yaml:" in err


# --- did you mean ---------------------------------------------------------------------------------


def test_a_mistyped_flag_names_the_flag_meant(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "run", str(SERIAL), "--dryrun")
    assert code == 2
    assert "--dryrun: did you mean --dry-run?" in err
    assert "usage: recovery run " in err
    code, _, err = run_main(capsys, "lab", "status", "--jsn")
    assert (code, "did you mean --json?" in err) == (2, True)


def test_a_mistyped_flag_before_a_missing_argument_is_still_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "--verison")
    assert code == 2
    assert "required: COMMAND (--verison: did you mean --version?)" in err


def test_a_mistyped_command_names_the_command_meant(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "valdiate", str(SERIAL))
    assert code == 2
    assert "(did you mean validate?)" in err


def test_a_mistyped_input_names_the_input_meant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", str(SERIAL), "--dry-run", "--journal", str(tmp_path), *DIRECT, "-e", "usr=ops"]
    code, _, err = run_main(capsys, *args)
    assert code == 2
    assert "-e usr: restore-access-serial.yaml has no input 'usr' (did you mean user? inputs: " in err


# --- JSON, with a schema version ------------------------------------------------------------------


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    broken = ROOT / "tests" / "cases" / "invalid" / "broken-yaml.yaml"
    code, out, _ = run_main(capsys, "validate", "--json", str(SERIAL), str(broken), str(ROOT / "missing.yaml"))
    assert code == 2
    document = json.loads(out)
    assert document["schema"] == 1
    good, bad, missing = document["playbooks"]
    assert (good["valid"], good["steps"] > 3) == (True, True)
    assert bad["valid"] is False
    assert bad["problems"][0]["line"] == 6
    assert missing["valid"] is False
    assert "missing.yaml" in missing["problems"][0]["message"]


def test_steps_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "steps", "--json")
    document = json.loads(out)
    assert (code, document["schema"]) == (0, 1)
    generate = next(item for item in document["steps"] if item["name"] == "keys.generate")
    assert {item["name"] for item in generate["inputs"]} >= {"type", "bits", "path"}
    assert "public_key" in generate["outputs"]


def test_dry_run_json_is_the_plan_with_secrets_masked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "run", str(SERIAL), "--dry-run", "--json", "--journal", str(tmp_path), *DIRECT)
    assert code == 0
    assert TOKEN not in out
    plan = json.loads(out)
    assert (plan["schema"], plan["dry_run"]) == (1, True)
    steps = {step["id"]: step for step in plan["steps"]}
    assert steps["find"]["runs"] is False  # `when: {{ inputs.server }}` with no server
    assert steps["key"]["with"]["type"] == "ed25519"
    typing = [step for step in plan["steps"] if step["would_type"]]
    assert typing, "the injection's typed lines"
    assert any("authorized_keys" in line for step in typing for line in step["would_type"])
    assert {step["phase"] for step in plan["steps"]} == {"main", "always"}
    assert not list(tmp_path.iterdir())  # nothing was run


def test_dry_run_json_lists_the_phases_in_the_order_they_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "phases.yaml").write_text(
        "steps:\n"
        "  - {id: first, uses: test.record, with: {message: one}, cleanup: [{id: undo, uses: test.record}]}\n"
        "  - {id: bye, uses: test.record, always: true, with: {message: bye}}\n"
        "  - {id: second, uses: test.record, when: '{{ false }}'}\n"
    )
    code, out, _ = run_main(capsys, "run", str(tmp_path / "phases.yaml"), "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0
    assert [(step["id"], step["phase"], step["runs"]) for step in plan["steps"]] == [
        ("first", "main", True), ("second", "main", False), ("undo", "cleanup", True), ("bye", "always", True)
    ]
    assert plan["steps"][0]["with"] == {"message": "one"}


def test_dry_run_json_refuses_what_the_run_would(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*DIRECT, "-e", "ssh_port=70000"]
    code, out, err = run_main(capsys, "run", str(SERIAL), "--dry-run", "--json", "--journal", str(tmp_path), *args)
    assert (code, out) == (2, "")
    assert "ssh_port" in err


def test_run_json_report_has_a_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "run", str(book(tmp_path)), "--journal", str(tmp_path / "runs"), "--json")
    report = json.loads(out)
    assert (code, report["schema"], report["status"]) == (0, 1, "succeeded")


def test_audit_json_has_a_schema() -> None:
    from tests.unit.test_audit_render import REPORTS  # the reports the render cases are made from

    assert {json.loads(render_json(report))["schema"] for report in REPORTS.values()} == {1}


# --- JSON Schema of playbooks -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, object]:
    from recovery.engine.schema import playbook_schema

    document = playbook_schema(step_types())
    jsonschema.Draft202012Validator.check_schema(document)
    return document


def test_steps_schema_prints_the_schema(schema: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "steps", "--schema")
    assert (code, json.loads(out)) == (0, schema)


VALID = [*SHIPPED, *sorted((ROOT / "tests" / "cases" / "valid").glob("*.yaml"))]


@pytest.mark.parametrize("path", VALID, ids=[path.name for path in VALID])
def test_every_shipped_and_valid_playbook_fits_the_schema(path: Path, schema: dict[str, object]) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("name", ["many-problems", "bad-when", "empty"])
def test_invalid_playbook_cases_do_not_fit_the_schema(name: str, schema: dict[str, object]) -> None:
    document = yaml.safe_load((ROOT / "tests" / "cases" / "invalid" / f"{name}.yaml").read_text())
    assert not jsonschema.Draft202012Validator(schema).is_valid(document)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc.update(stepz=[]), "stepz"),
        (lambda doc: doc["steps"][0].update(uses="keys.generat"), "keys.generat"),
        (lambda doc: doc["steps"][0].update(retry=0), "retry"),
        (lambda doc: doc["steps"][0].update(timeout=-1), "timeout"),
        (lambda doc: doc["steps"][0].update({"with": {"tpye": "rsa"}}), "tpye"),
        (lambda doc: doc["steps"][0].update({"with": {"type": "dsa"}}), "dsa"),
        (lambda doc: doc["steps"][0].update({"with": {"bits": "many"}}), "many"),
        (lambda doc: doc["steps"].append({"id": "login", "uses": "console.login"}), "with"),
        (lambda doc: doc["inputs"]["user"].update(type="str"), "str"),
    ],
)
def test_an_invalid_playbook_does_not_fit_the_schema(change: object, message: str, schema: dict[str, object]) -> None:
    document = {
        "inputs": {"user": {"type": "string"}},
        "steps": [{"id": "key", "uses": "keys.generate", "with": {"type": "ed25519", "bits": "{{ inputs.bits }}"}}],
    }
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)  # valid before the change
    change(document)  # type: ignore[operator]
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(document))
    assert any(message in f"{error.json_path} {error.message}" for error in errors), errors


# --- shell completion ----------------------------------------------------------------------------


def printed(capsys: pytest.CaptureFixture[str], shell: str) -> str:
    code, out, err = run_main(capsys, "completion", shell)
    assert (code, err) == (0, "")
    return out


def complete(tmp_path: Path, script: str, *words: str) -> list[str]:
    """What bash offers for `words` (the last one is being typed), with `script` sourced."""
    (tmp_path / "recovery.bash").write_text(script)
    (tmp_path / "restore.yaml").write_text("steps: []\n")
    (tmp_path / "notes.txt").write_text("")
    quoted = " ".join(f"'{word}'" for word in words)
    program = (
        f"source ./recovery.bash\nCOMP_WORDS=(recovery {quoted})\nCOMP_CWORD={len(words)}\n"
        "_recovery\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(["bash", "-c", program], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stderr == ""
    return sorted(line for line in done.stdout.splitlines() if line)


def test_bash_completes_commands_flags_choices_and_playbooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = printed(capsys, "bash")
    assert complete(tmp_path, script, "") == sorted(subcommands(build_parser()))
    assert complete(tmp_path, script, "r") == ["revoke", "run"]
    assert complete(tmp_path, script, "run", "--dr") == ["--dry-run"]
    assert complete(tmp_path, script, "-v", "run", "-e", "user=x", "--jso") == ["--json"]
    assert complete(tmp_path, script, "run", "") == ["restore.yaml"]  # playbooks, not other files
    assert complete(tmp_path, script, "run", "x.yaml", "--config", "") == ["notes.txt", "recovery.bash", "restore.yaml"]
    assert complete(tmp_path, script, "lab", "") == ["down", "status", "up"]
    assert complete(tmp_path, script, "lab", "up", "--console", "") == ["serial", "vnc"]
    assert complete(tmp_path, script, "audit", "--format", "j") == ["json", "junit"]
    assert complete(tmp_path, script, "completion", "") == ["bash", "fish", "zsh"]
    assert complete(tmp_path, script, "run", "-e", "") == []  # a value, not a flag or a file


def test_zsh_and_fish_scripts_cover_the_same_commands(capsys: pytest.CaptureFixture[str]) -> None:
    zsh = printed(capsys, "zsh")
    assert zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -F _recovery recovery" in zsh
    fish = printed(capsys, "fish")
    commands = " ".join(subcommands(build_parser()))
    assert f"complete -c recovery -n __fish_use_subcommand -a '{commands}'" in fish
    assert "complete -c recovery -n '__fish_seen_subcommand_from run' -l dry-run" in fish
    lab_up = "'__fish_seen_subcommand_from lab && __fish_seen_subcommand_from up'"
    assert f"-n {lab_up} -l console -r -a 'serial vnc'" in fish


def test_the_fish_script_parses(capsys: pytest.CaptureFixture[str]) -> None:
    assert shutil.which("fish"), "fish is not installed: apt-get install fish (make test installs it)"
    subprocess.run(["fish", "--no-execute", "-c", printed(capsys, "fish")], check=True)


# --- the README's command reference -------------------------------------------------------------


def readme_commands() -> dict[str, set[str]]:
    """The long flags of each command in the README's "Commands" block."""
    text = (ROOT / "README.md").read_text()
    block = text.split("### Commands\n", 1)[1].split("```\n", 2)[1]
    entries: dict[str, set[str]] = {}
    current = ""
    for line in block.splitlines():
        if line.startswith("recovery "):
            words = line.split()[1:]
            current = " ".join(word for word in words[:2] if re.fullmatch(r"[a-z]+", word)
                               and (word == words[0] or words[0] == "lab"))
            entries[current] = set()
        entries[current] |= set(re.findall(r"--[a-z][a-z-]*", line))
    return entries


def test_the_readme_command_reference_matches_the_parser() -> None:
    expected = {}
    for path, parser in all_parsers().items():
        if subcommands(parser) and path:
            continue  # `lab` itself: its commands are listed
        flags = {action.option_strings[0] if action.option_strings[0].startswith("--") else action.option_strings[-1]
                 for action in parser._actions if action.option_strings}
        expected[path] = {flag for flag in flags if flag.startswith("--")} - {"--help", "--verbose", "--quiet"}
    assert readme_commands() == expected
