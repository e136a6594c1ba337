"""`choose:` routes: validation with file:line, the first possible route, the rule for moving on, resume, dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.unit.route_steps  # noqa: F401  (registers test.route)
from recovery.engine import routes
from recovery.engine.config import Config
from recovery.engine.journal import Journal
from recovery.engine.plan import plan_document, render_plan
from recovery.engine.playbook import parse_playbook
from recovery.engine.preflight import PreflightError
from recovery.engine.report import exit_code
from recovery.engine.runner import Runner, RunRequest
from recovery.errors import (
    AgentError,
    AuthRejected,
    CloudError,
    GuestCommandError,
    HostKeyMismatch,
    LoginRejected,
    NotPossible,
    PlaybookError,
    StepError,
)
from tests.unit.fake_steps import CALLS

BOOK = """
inputs:
  agent: {default: ""}
  console: {default: login_rejected}
  console_later: {default: ""}
  allow_reboot: {type: boolean, default: false}
steps:
  - id: key
    uses: test.once
  - id: access
    name: get the key onto the VM
    choose:
      - id: agent
        name: the guest agent
        when: "{{ inputs.agent }}"
        skip_reason: no -e agent given
        steps:
          - id: agent_install
            uses: test.route
            with: {message: agent, fail: "{{ inputs.agent }}"}
        outputs:
          how: "{{ steps.agent_install.outputs.message }}"
      - id: console
        name: the console
        steps:
          - id: console_open
            uses: test.route
            with: {message: open}
          - id: console_login
            uses: test.route
            probe: true
            with: {message: login, fail: "{{ inputs.console }}"}
          - id: console_install
            uses: test.route
            with: {message: install, fail: "{{ inputs.console_later }}"}
        outputs:
          how: "{{ steps.console_install.outputs.message }}"
      - id: boot
        name: the boot loader
        reboots: true
        steps:
          - id: boot_install
            uses: test.route
            with: {message: "boot {{ steps.key.outputs.value }}"}
        outputs:
          how: "{{ steps.boot_install.outputs.message }}"
  - id: after
    uses: test.record
    with:
      message: >-
        {{ steps.access.outputs.route }}/{{ steps.access.outputs.how }}/{{steps.console_open.outputs.message or 'none'}}
"""


def run(tmp_path: Path, text: str = BOOK, *, inputs=None, previous=None, journal=None, confirm=None):
    playbook = parse_playbook(text, tmp_path / "book.yaml")
    journal = journal or Journal.create(tmp_path / "runs")
    values = {"agent": "", "console": "login_rejected", "console_later": "", "allow_reboot": False, **(inputs or {})}
    runner = Runner(RunRequest(playbook, values, {}, Config()), journal, previous=previous, confirm=confirm)
    return runner.run(), journal


# --- execution ---------------------------------------------------------------------------------------


def test_a_route_found_not_possible_is_undone_and_the_next_one_runs(tmp_path: Path) -> None:
    report, journal = run(tmp_path, inputs={"allow_reboot": True})
    assert report.status == "succeeded"
    # The console route's own set-up is undone before the boot route starts; nothing of it reaches `after`.
    assert CALLS == ["key:once", "console_open:open", "console_login:login", "undo:console_login",
                     "undo:console_open", "boot_install:boot v", "after:boot/boot v/none", "undo:after",
                     "undo:boot_install"]
    (choice,) = report.choices
    assert choice.route == "boot"
    assert choice.skipped == {
        "agent": "no -e agent given",
        "console": "not possible: step console_login (test.route): the console refused the password for ops",
    }
    markdown = report.to_markdown()
    assert "- access (get the key onto the VM): route `boot` was used" in markdown
    assert "  - `agent` skipped: no -e agent given" in markdown
    statuses = {record.id: record.status for record in report.timeline}
    assert statuses == {"key": "succeeded", "access": "succeeded", "console_open": "succeeded",
                        "console_login": "not_possible", "boot_install": "succeeded", "after": "succeeded"}
    saved = journal.load_steps()["access"]
    assert saved["outputs"]["route"] == "boot"
    assert saved["outputs"]["how"] == "boot v"


def test_the_first_possible_route_runs_and_the_later_ones_are_not_tried(tmp_path: Path) -> None:
    report, _ = run(tmp_path, inputs={"console": ""})
    assert report.status == "succeeded"
    assert "boot_install:boot v" not in CALLS
    assert "after:console/install/open" in CALLS
    assert report.choices[0].skipped == {"agent": "no -e agent given"}


@pytest.mark.parametrize("failure", ["agent_silent", "cloud_409", "no_agent_image"])
def test_a_first_step_that_finds_the_route_not_possible_moves_on(tmp_path: Path, failure: str) -> None:
    report, _ = run(tmp_path, inputs={"agent": failure, "console": ""})
    assert report.status == "succeeded"
    assert report.choices[0].route == "console"
    assert report.choices[0].skipped["agent"].startswith("not possible: step agent_install (test.route): ")


@pytest.mark.parametrize("failure", ["agent_dropped_keys", "guest_failed", "bug"])
def test_a_first_step_that_fails_otherwise_fails_the_run(tmp_path: Path, failure: str) -> None:
    report, _ = run(tmp_path, inputs={"agent": failure, "console": ""})
    assert report.status == "failed"
    assert report.failed_step == "agent_install"
    assert not any(call.startswith("console_open") for call in CALLS)


def test_a_route_failing_after_it_changed_something_is_not_followed_by_the_next(tmp_path: Path) -> None:
    # console_install is not a probe: even a "not possible" error there fails the run (the VM may be half-changed).
    report, journal = run(tmp_path, inputs={"console": "", "console_later": "login_rejected", "allow_reboot": True})
    assert report.status == "failed"
    assert report.failed_step == "console_install"
    assert exit_code(report) == 1
    assert "boot_install:boot v" not in CALLS
    assert report.choices[0].route == "console"
    assert journal.load_steps()["access"]["status"] == "failed"


def test_when_no_route_is_possible_one_error_lists_each_reason_and_the_exit_is_1(tmp_path: Path) -> None:
    report, _ = run(tmp_path, inputs={"agent": "agent_silent"})  # boot: it reboots, and nobody allowed it
    assert report.status == "failed"
    assert exit_code(report) == 1
    assert report.failed_step == "access"
    assert report.error is not None
    assert report.error.startswith("access: no route is possible:\n")
    assert "- agent (the guest agent): not possible: step agent_install (test.route): the guest agent" in report.error
    assert "- console (the console): not possible: step console_login (test.route): the console refused" in report.error
    assert "- boot (the boot loader): it reboots the VM, and rebooting was not allowed: give -e allow_reboot=true" \
        in report.error
    assert "after:" not in " ".join(CALLS)
    assert report.choices[0].route is None
    assert "no route was possible" in report.to_markdown()


def test_a_route_that_reboots_is_asked_about_and_a_no_skips_it(tmp_path: Path) -> None:
    questions: list[str] = []

    def answer(question: str) -> bool:
        questions.append(question)
        return len(questions) > 1

    refused, _ = run(tmp_path, confirm=answer)
    assert refused.status == "failed"
    assert "- boot (the boot loader): it reboots the VM, and the operator answered no" in (refused.error or "")
    agreed, _ = run(tmp_path, confirm=answer)
    assert agreed.status == "succeeded"
    assert agreed.choices[0].route == "boot"
    assert questions[0].startswith("access: route boot (the boot loader) reboots the VM")
    assert any("the operator agreed" in note for note in agreed.notes)


def test_allow_reboot_runs_a_rebooting_route_without_asking(tmp_path: Path) -> None:
    def never(question: str) -> bool:
        raise AssertionError(question)

    report, _ = run(tmp_path, inputs={"allow_reboot": True}, confirm=never)
    assert report.choices[0].route == "boot"


def test_a_choice_whose_routes_are_all_ruled_out_before_the_run_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    text = BOOK.replace("reboots: true\n", "when: \"{{ false }}\"\n        skip_reason: no boot loader here\n")
    text = text.replace("name: the console\n", "name: the console\n        when: \"{{ inputs.console_later }}\"\n")
    with pytest.raises(PreflightError) as refused:
        run(tmp_path, text)
    assert refused.value.exit_code == 2
    message = str(refused.value)
    assert "step access (choose, line 10): no route is possible:" in message
    assert "- agent (the guest agent): no -e agent given" in message
    assert "- console (the console): its condition {{ inputs.console_later }} is false" in message
    assert "- boot (the boot loader): no boot loader here" in message
    assert CALLS == []


def test_resume_goes_back_into_the_route_the_earlier_attempt_was_in(tmp_path: Path) -> None:
    first, journal = run(tmp_path, inputs={"console": "", "console_later": "guest_failed"})
    assert (first.status, first.failed_step) == ("failed", "console_install")
    CALLS.clear()
    # The agent route would now be possible, but the VM was half-changed by the console route: go on with it.
    resumed, _ = run(tmp_path, inputs={"agent": "", "console": "", "console_later": ""},
                     previous=journal.load_steps(), journal=journal)
    assert resumed.status == "succeeded"
    assert CALLS[:4] == ["console_open:open", "console_login:login", "console_install:install",
                         "after:console/install/open"]
    assert resumed.choices[0].route == "console"
    assert resumed.choices[0].skipped["agent"].startswith(
        "not tried again: the earlier attempt went into route console")
    assert [r.status for r in resumed.timeline][:1] == ["resumed"]  # the key is not made twice


def test_an_interrupt_inside_a_route_is_resumed_in_that_route(tmp_path: Path) -> None:
    text = BOOK.replace("          - id: console_install\n            uses: test.route\n",
                        "          - id: console_install\n            uses: test.interrupt\n").replace(
        "            with: {message: install, fail: \"{{ inputs.console_later }}\"}\n", "")
    text = text.replace("how: \"{{ steps.console_install.outputs.message }}\"", "how: \"{{ 'typed' }}\"")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, text, inputs={"console": ""})
    journal = Journal.open(tmp_path / "runs", next((tmp_path / "runs").iterdir()).name)
    saved = journal.load_steps()
    assert saved["access"]["status"] == "interrupted"
    assert saved["access"]["outputs"]["route"] == "console"
    assert saved["console_install"]["status"] == "interrupted"


def test_a_choice_whose_condition_is_false_leaves_every_output_null(tmp_path: Path) -> None:
    text = BOOK.replace("    name: get the key onto the VM\n", "    name: get the key onto the VM\n    when: false\n")
    text = text.replace("{{ steps.access.outputs.route }}/{{ steps.access.outputs.how }}/",
                        "{{ steps.access.outputs.route or 'no route' }}/")
    report, _ = run(tmp_path, text)
    assert report.status == "succeeded"
    assert CALLS == ["key:once", "after:no route/none", "undo:after"]
    assert report.choices[0].route is None
    assert [r.status for r in report.timeline if r.id == "access"] == ["skipped"]


def test_a_ctrl_c_while_a_route_given_up_is_undone_stops_the_run(tmp_path: Path) -> None:
    text = BOOK.replace("with: {message: login, fail: \"{{ inputs.console }}\"}",
                        "with: {message: login, fail: \"{{ inputs.console }}\", undo_interrupted: true}")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, text, inputs={"allow_reboot": True})
    assert "boot_install:boot v" not in CALLS  # the next route never starts
    assert CALLS[-1] == "undo:console_open"  # the rest of the cleanups still ran
    journal = Journal.open(tmp_path / "runs", next((tmp_path / "runs").iterdir()).name)
    assert journal.read_json("report.json")["status"] == "interrupted"


# --- dry run ----------------------------------------------------------------------------------------


def test_the_plan_shows_each_route_its_steps_and_why_one_is_skipped(tmp_path: Path) -> None:
    playbook = parse_playbook(BOOK, tmp_path / "book.yaml")
    inputs = {"agent": "", "console": "", "console_later": "", "allow_reboot": False}
    text = render_plan(playbook, inputs, Config())
    assert "2. access: choose — get the key onto the VM" in text
    assert "   a) route agent — the guest agent: skipped: no -e agent given" in text
    assert "   b) route console — the console: tried first" in text
    assert "     - console_login: test.route" in text
    assert ("   c) route boot — the boot loader: tried if the ones before it are not possible; it reboots the VM: "
            "asked on a terminal, else skipped (-e allow_reboot=true to allow it)") in text
    document = plan_document(playbook, inputs, Config())
    choice = next(step for step in document["steps"] if step["id"] == "access")
    assert [(r["id"], r["runs"], r["asks"]) for r in choice["routes"]] == [
        ("agent", False, False), ("console", True, False), ("boot", True, True)]
    assert [s["id"] for s in choice["routes"][1]["steps"]] == ["console_open", "console_login", "console_install"]
    json.dumps(document)


def test_a_plan_reads_no_secret_so_a_route_needing_an_optional_one_is_decided_at_run_time(tmp_path: Path) -> None:
    text = BOOK.replace("steps:\n  - id: key\n", "secrets:\n  password: {required: false}\nsteps:\n  - id: key\n", 1)
    text = text.replace("name: the console\n", "name: the console\n        when: \"{{ secrets.password }}\"\n")
    playbook = parse_playbook(text, tmp_path / "book.yaml")
    plan = render_plan(playbook, {"agent": "", "console": "", "console_later": "", "allow_reboot": False}, Config())
    assert "   b) route console — the console: tried first, if at run time {{ secrets.password }} holds" in plan


def test_the_plan_knows_the_outputs_when_one_route_is_left(tmp_path: Path) -> None:
    text = BOOK.replace("reboots: true\n", "when: \"{{ false }}\"\n")
    text = text.split("  - id: after\n")[0] + (
        "  - id: after\n    uses: test.record\n    with: {message: \"{{ steps.access.outputs.route }}\"}\n")
    playbook = parse_playbook(text, tmp_path / "book.yaml")
    plan = render_plan(playbook, {"agent": "", "console": "", "console_later": "", "allow_reboot": False}, Config())
    assert "message: console" in plan


# --- validation -------------------------------------------------------------------------------------


def problems(text: str, tmp_path: Path) -> str:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, tmp_path / "bad.yaml")
    return str(caught.value)


def route(route_id: str, *steps: str, extra: str = "") -> str:
    body = "".join(f"          - id: {step}\n            uses: test.route\n" for step in steps)
    return f"      - id: {route_id}\n{extra}        steps:\n{body}"


def choice(*routes_text: str, head: str = "") -> str:
    return "steps:\n  - id: access\n" + head + "    choose:\n" + "".join(routes_text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (choice(route("a", "one")), "bad.yaml:3: steps[0].choose: expected a list of at least two routes"),
        (choice(route("a", "one"), route("a", "two")), "bad.yaml:8: steps[0].choose[1].id: route id 'a' is used twice"),
        (choice(route("a", "one"), route("b", "one")), "step id 'one' is used twice"),
        (choice(route("a", "one"), route("b", "access")),
         "bad.yaml:2: steps[0].id: step id 'access' is used twice (by a step of one of its routes)"),
        (choice(route("a", "one"), "      - id: b\n        steps: []\n"),
         "bad.yaml:9: steps[0].choose[1].steps: expected a list of steps"),
        (choice(route("a", "one"), route("b", "two", extra="        reboots: true\n")),
         "bad.yaml:9: steps[0].choose[1].reboots: a route that reboots needs a boolean input 'allow_reboot'"),
        (choice(route("a", "one"), route("b", "two", extra="        when: \"{{ inputs.nope }}\"\n")),
         "bad.yaml:9: steps[0].choose[1].when: inputs.nope is not a declared input"),
        (choice(route("a", "one"), route("b", "two", extra="        when: inputs.agent\n")),
         "text is always true"),
        (choice(route("a", "one"), route("b", "two", extra="        color: blue\n")),
         "bad.yaml:9: steps[0].choose[1].color: unknown key "
         "(allowed: id, name, outputs, reboots, skip_reason, steps, when)"),
        (choice(route("a", "one"), route("b", "two", extra="        outputs: {route: x}\n")),
         "bad.yaml:9: steps[0].choose[1].outputs.route: an output name is lowercase letters"),
        (choice(route("a", "one"), route("b", "two", extra="        outputs: {x: \"{{ steps.two.outputs.nope }}\"}\n")),
         "test.route has no output 'nope'"),
        (choice(route("a", "one"), route("b", "two"), head="    uses: test.route\n"),
         "bad.yaml:3: steps[0].uses: unknown key (allowed: choose, id, name, when)"),
        ("steps:\n  - id: one\n    uses: test.route\n    probe: true\n",
         "bad.yaml:4: steps[0].probe: only the steps of a route (under choose:) can be probes"),
        (choice(route("a", "one", "two", "three"), route("b", "four")).replace(
            "          - id: three\n            uses: test.route\n",
            "          - id: three\n            uses: test.route\n            probe: true\n"),
         "bad.yaml:12: steps[0].choose[0].steps[2].probe: a probe must come before every step that may change the VM, "
         "but step two before it is not a probe"),
        (choice(route("a", "one"), "      - id: b\n        steps:\n          - id: inner\n            choose: []\n"),
         "bad.yaml:11: steps[0].choose[1].steps[0].choose: a route cannot hold a choose"),
        ("steps:\n  - id: later\n    uses: test.record\n    with: {message: \"{{ steps.access.outputs.nope }}\"}\n"
         + choice(route("a", "one"), route("b", "two"))[len("steps:\n"):],
         "refers to step 'access', which does not exist or comes later"),
    ],
)
def test_invalid_choices_are_located_by_file_and_line(text: str, expected: str, tmp_path: Path) -> None:
    assert expected in problems(text, tmp_path)


def test_later_steps_may_read_the_choice_and_its_route_outputs(tmp_path: Path) -> None:
    playbook = parse_playbook(BOOK, tmp_path / "book.yaml")
    access = playbook.steps[1]
    assert [r.id for r in access.routes] == ["agent", "console", "boot"]
    assert [r.probes for r in access.routes] == [1, 2, 1]
    assert access.outputs == ("route", "skipped", "how")
    assert [s.id for s in playbook.all_steps()] == [
        "key", "access", "agent_install", "console_open", "console_login", "console_install", "boot_install", "after"]


# --- what is "not possible" -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (LoginRejected("refused"), True),
        (AuthRejected("refused"), True),
        (AgentError("no socket"), True),
        (AgentError("silent", command="guest-sync-delimited"), True),
        (AgentError("blocked", command="guest-exec", blocked=True), False),
        (AgentError("dropped keys", command="guest-ssh-add-authorized-keys"), False),
        (CloudError("agent not enabled", status_code=409), True),
        (CloudError("agent not answering", status_code=501), True),
        (CloudError("forbidden", status_code=403), False),
        (NotPossible("the image gives the server no guest agent"), True),
        (HostKeyMismatch("changed"), False),
        (GuestCommandError("half-way"), False),
        (StepError("anything"), False),
    ],
)
def test_which_errors_say_a_route_is_not_possible(error: StepError, expected: bool) -> None:
    assert routes.not_possible(error) is expected


# --- the JSON Schema (`recovery steps --schema`) ---------------------------------------------------


def test_the_schema_takes_a_choice_and_says_what_is_wrong_inside_one() -> None:
    import jsonschema
    import yaml

    from recovery.engine.catalog import step_types
    from recovery.engine.schema import playbook_schema

    schema = playbook_schema(step_types())
    document = yaml.safe_load(BOOK)
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    document["steps"][1]["choose"][1]["steps"][1]["probe"] = "yes"
    del document["steps"][1]["choose"][2]["steps"]
    errors = [f"{e.json_path} {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(document)]
    assert any("probe" in error and "'yes' is not of type 'boolean'" in error for error in errors), errors
    assert any("'steps' is a required property" in error for error in errors), errors


# --- the shipped playbook ----------------------------------------------------------------------------


def test_restore_access_in_a_cloud_forecasts_the_console_route_with_the_url_nova_will_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from recovery.engine import preflight
    from recovery.engine.playbook import load_playbook, resolve_inputs
    from recovery.engine.templating import Unknown
    from recovery.safety.redact import Secret

    playbook = load_playbook(Path(__file__).resolve().parents[2] / "playbooks" / "restore-access.yaml")
    inputs = resolve_inputs(playbook, {"server": "web-1", "user": "ubuntu"})
    secrets = {"console_password": Secret("pw-for-tests", "<pw>")}
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  mycloud:\n    auth_type: none\n    compute_endpoint_override: http://127.0.0.1:9\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    config = Config()
    config = dataclasses.replace(config, cloud=dataclasses.replace(config.cloud, name="mycloud"))
    items = {item.spec.id: item for item in preflight.check(playbook, inputs, secrets, config)}
    choice = items["access"]
    assert isinstance(choice, preflight.ChoiceForecast)
    agent, console, password = choice.routes
    assert (agent.runs, agent.reason) == (False, "no guest agent given (-e agent=unix://..., libvirt://... or "
                                                 "proxmox://...)")
    assert console.runs is True
    assert password.runs is True  # tried only if the console is not possible
    steps = {item.spec.id: item for item in console.steps}
    assert steps["console_url"].runs is True
    assert steps["console_url"].values["kind"] == "serial"
    assert isinstance(steps["console_open"].values["url"], Unknown)
    assert isinstance(items["verify"].values["host"], Unknown)


def test_restore_access_skips_the_console_route_when_the_password_prompt_is_left_empty() -> None:
    from recovery.engine import preflight
    from recovery.engine.playbook import load_playbook, resolve_inputs
    from recovery.safety.redact import Secret

    playbook = load_playbook(Path(__file__).resolve().parents[2] / "playbooks" / "restore-access.yaml")
    assert playbook.secrets["console_password"].prompt == "Console password (Enter to skip the console route)"
    inputs = resolve_inputs(playbook, {"console_url": "ws://127.0.0.1:9/?token=t", "ssh_host": "127.0.0.1",
                                       "user": "ops", "agent": "unix:///run/qga.sock", "trust_first_use": "true"})
    items = {item.spec.id: item for item in preflight.check(playbook, inputs, {"console_password": Secret("")},
                                                            Config())}
    choice = items["access"]
    assert isinstance(choice, preflight.ChoiceForecast)
    assert [(route.route.id, route.runs) for route in choice.routes] == [
        ("agent", True), ("console", False), ("password", False)]
    assert (choice.routes[1].reason or "").startswith("no console password known")


def test_restore_access_in_a_cloud_without_a_password_goes_to_the_password_set_through_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from recovery.engine import preflight
    from recovery.engine.playbook import load_playbook, resolve_inputs

    playbook = load_playbook(Path(__file__).resolve().parents[2] / "playbooks" / "restore-access.yaml")
    inputs = resolve_inputs(playbook, {"server": "web-1", "user": "ubuntu"})
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds:\n  mycloud:\n    auth_type: none\n    compute_endpoint_override: http://127.0.0.1:9\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    config = Config()
    config = dataclasses.replace(config, cloud=dataclasses.replace(config.cloud, name="mycloud"))
    items = {item.spec.id: item for item in preflight.check(playbook, inputs, {}, config)}
    choice = items["access"]
    assert isinstance(choice, preflight.ChoiceForecast)
    assert [(route.route.id, route.runs) for route in choice.routes] == [
        ("agent", False), ("console", False), ("password", True)]
    steps = [item.spec.id for item in choice.routes[2].steps]
    assert steps[0] == "set_password"  # the probe: Nova's 409 or 501 means not possible, and nothing was set
    assert choice.routes[2].route.probes == 1
    assert steps[-1] == "lock_password"


def test_a_secret_only_a_route_uses_is_in_use_only_when_that_route_may_run() -> None:
    from recovery.engine.playbook import load_playbook, resolve_inputs
    from recovery.engine.preflight import secrets_in_use

    playbook = load_playbook(Path(__file__).resolve().parents[2] / "playbooks" / "restore-access.yaml")
    direct = {"user": "ops", "ssh_host": "127.0.0.1", "trust_first_use": "true"}
    with_console = resolve_inputs(playbook, {**direct, "console_url": "ws://127.0.0.1:9/?token=t"})
    agent_only = resolve_inputs(playbook, {**direct, "agent": "unix:///run/qga.sock"})
    assert "console_password" in secrets_in_use(playbook, with_console, Config())
    assert "console_password" not in secrets_in_use(playbook, agent_only, Config())  # never asked for
