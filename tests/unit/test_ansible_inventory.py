"""Ansible inventories (YAML and INI) as the audit's and revoke's hosts, `--limit`, and what is refused.

The inventories are shaped like those teams keep: `all:` with nested children, INI with
`[group:vars]` and `[group:children]`, `host:port`, comments, a localhost line. Each refused
feature is exit 2 (a `UsageError`) whose message names it and, where there is one, its line.
"""

from __future__ import annotations

import logging
import shlex
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.audit.ansible_inventory import _words, load_any
from recovery.audit.inventory import HostDefaults, load_inventory
from recovery.audit.model import Host
from recovery.cli.main import main
from recovery.errors import UsageError

KEY = Path("/keys/ops")
CLI = HostDefaults(user=None, keys=(KEY,))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load(tmp_path: Path, name: str, text: str, limit: str | None = None, fallback: HostDefaults = CLI) -> list[Host]:
    return load_inventory(write(tmp_path, name, text), fallback, limit)


def table(hosts: list[Host]) -> list[tuple[str, str | None, int, str]]:
    return [(host.name, host.address, host.port, host.user) for host in hosts]


def refused(tmp_path: Path, name: str, text: str, limit: str | None = None, fallback: HostDefaults = CLI) -> str:
    with pytest.raises(UsageError) as caught:
        load(tmp_path, name, text, limit, fallback)
    return str(caught.value)


NESTED_YAML = """
# the production fleet
all:
  vars:
    ansible_user: root
    ansible_port: 22
  hosts:
    bastion.example.com:
  children:
    europe:
      vars:
        ansible_user: eu-admin
        ansible_port: 2200
      children:
        web:
          vars:
            ansible_user: www
          hosts:
            web1.example.com:
              ansible_host: 192.0.2.11
            web2.example.com:2222:
        db:
          hosts:
            db1.example.com:
              ansible_host: 192.0.2.21
              ansible_user: postgres
    monitoring:
      hosts:
        web1.example.com:
        prom.example.com:
          ansible_port: "9922"
"""


def test_nested_yaml_children_merge_vars_all_then_parent_then_child_then_host(tmp_path: Path) -> None:
    hosts = load(tmp_path, "prod.yaml", NESTED_YAML)

    assert table(hosts) == [
        ("bastion.example.com", "bastion.example.com", 22, "root"),  # no ansible_host: its name is the address
        ("web1.example.com", "192.0.2.11", 2200, "www"),  # web (child) over europe (parent) over all
        ("web2.example.com", "web2.example.com", 2222, "www"),  # host:port is a host var: it wins over groups
        ("db1.example.com", "192.0.2.21", 2200, "postgres"),  # the host's own var wins
        ("prom.example.com", "prom.example.com", 9922, "root"),
    ]
    assert all(host.keys == (KEY,) for host in hosts)


@pytest.mark.parametrize(
    ("limit", "names"),
    [
        ("web", ["web1.example.com", "web2.example.com"]),
        ("europe", ["web1.example.com", "web2.example.com", "db1.example.com"]),  # descendants of children
        ("db:monitoring", ["web1.example.com", "db1.example.com", "prom.example.com"]),  # inventory order
        ("db,prom.example.com", ["db1.example.com", "prom.example.com"]),
        ("web2*", ["web2.example.com"]),
        ("*rope", ["web1.example.com", "web2.example.com", "db1.example.com"]),  # a glob over group names too
        ("ungrouped", ["bastion.example.com"]),  # hosts of `all` only, as Ansible
        ("all", ["bastion.example.com", "web1.example.com", "web2.example.com", "db1.example.com",
                 "prom.example.com"]),
        ("*", ["bastion.example.com", "web1.example.com", "web2.example.com", "db1.example.com",
               "prom.example.com"]),
        (" web1.example.com , ", ["web1.example.com"]),
    ],
)
def test_limit_takes_names_groups_globs_and_unions(tmp_path: Path, limit: str, names: list[str]) -> None:
    assert [host.name for host in load(tmp_path, "prod.yaml", NESTED_YAML, limit)] == names


PRODUCTION_INI = """
# hosts before any section are `ungrouped`
mail.example.com ansible_user=postfix

[webservers]   # the front
web1.example.com ansible_host=10.0.0.11 ansible_user=deploy  # inline comment
web2.example.com:2222
2001:db8::5 ansible_port=2022

[dbservers]
db1 ansible_host="10.0.0.21"
; db2 is retired
# db3 too

[prod:children]
webservers
dbservers   # both

[prod:vars]
ansible_user = ops
ansible_port=2200

[all:vars]
ansible_user=root
ansible_ssh_private_key_file=/etc/keys/fleet
ansible_python_interpreter="{{ ansible_playbook_python }}"

[control]
localhost ansible_connection=local
"""


def test_ini_with_sections_children_vars_ports_and_comments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        hosts = load(tmp_path, "hosts", PRODUCTION_INI)  # no extension: told by content

    assert table(hosts) == [
        ("mail.example.com", "mail.example.com", 22, "postfix"),
        ("web1.example.com", "10.0.0.11", 2200, "deploy"),
        ("web2.example.com", "web2.example.com", 2222, "ops"),
        ("2001:db8::5", "2001:db8::5", 2022, "ops"),
        ("db1", "10.0.0.21", 2200, "ops"),
    ]
    assert {host.keys for host in hosts} == {(Path("/etc/keys/fleet"),)}  # the inventory's key over --key
    assert "ansible_connection is local (this machine, not reached over SSH): localhost" in caplog.text


def test_ini_limit_and_a_local_host_named_in_it_is_skipped(tmp_path: Path) -> None:
    hosts = load(tmp_path, "hosts.ini", PRODUCTION_INI, "dbservers:ungrouped:control")

    assert [host.name for host in hosts] == ["mail.example.com", "db1"]


@pytest.mark.parametrize("limit", ["2001:db8::5", "2001:db8::5,db1"])
def test_limit_takes_an_ipv6_host_name_whole(tmp_path: Path, limit: str) -> None:
    hosts = load(tmp_path, "hosts.ini", PRODUCTION_INI, limit)

    assert [host.name for host in hosts] == ["2001:db8::5", "db1"][: limit.count(",") + 1]


def test_only_local_hosts_chosen_is_a_usage_error(tmp_path: Path) -> None:
    assert "every host chosen has ansible_connection=local" in refused(tmp_path, "h.ini", PRODUCTION_INI, "control")


def test_ini_with_no_section_is_read_when_not_named_yaml(tmp_path: Path) -> None:
    hosts = load(tmp_path, "hosts.txt", "web1 ansible_host=10.0.0.1\nweb2:2200\n", fallback=HostDefaults("ops", (KEY,)))

    assert table(hosts) == [("web1", "10.0.0.1", 22, "ops"), ("web2", "web2", 2200, "ops")]


def test_top_level_groups_without_all_and_json(tmp_path: Path) -> None:
    yaml_text = """
    webservers:
      hosts:
        a: {ansible_host: 10.0.0.1}
    dbservers:
      hosts:
        b:
      vars: {ansible_user: pg}
    """
    json_text = '{"all": {"children": {"dbservers": {"hosts": {"b": null}, "vars": {"ansible_user": "pg"}}}}}'

    assert table(load(tmp_path, "a.yml", yaml_text, fallback=HostDefaults("ops", (KEY,)))) == [
        ("a", "10.0.0.1", 22, "ops"), ("b", "b", 22, "pg")]
    assert table(load(tmp_path, "b.json", json_text)) == [("b", "b", 22, "pg")]


def test_groups_at_the_same_depth_merge_by_priority_then_name(tmp_path: Path) -> None:
    text = """
    [zeta]
    h1
    h2
    [alpha]
    h1
    h2
    h3
    [zeta:vars]
    ansible_user=from-zeta
    [alpha:vars]
    ansible_user=from-alpha
    """
    text2 = text.replace("[alpha:vars]", "[alpha:vars]\nansible_group_priority=5")

    assert [host.user for host in load(tmp_path, "a.ini", text)] == ["from-zeta", "from-zeta", "from-alpha"]
    assert [host.user for host in load(tmp_path, "b.ini", text2)] == ["from-alpha", "from-alpha", "from-alpha"]


def test_a_child_group_wins_over_its_parent_wherever_it_is_written(tmp_path: Path) -> None:
    text = """
    [child:vars]
    ansible_user=child
    [child]
    h
    [parent:children]
    child
    [parent:vars]
    ansible_user=parent
    """
    assert [host.user for host in load(tmp_path, "a.ini", text)] == ["child"]


def test_a_group_under_two_parents_takes_its_depth_from_the_longer_path(tmp_path: Path) -> None:
    text = """
    all:
      vars: {ansible_user: a0}
      children:
        p1:
          vars: {ansible_user: p1, ansible_port: 1001}
          children:
            c:
              hosts: {x: , y: {ansible_port: 7}}
        p2:
          vars: {ansible_user: p2}
          children:
            deep:
              vars: {ansible_port: 3000}
              children:
                c:
    """
    # c is at depth 3 (all > p2 > deep > c): p1 (1) < p2 (1, by name) < deep (2), then the host.
    assert table(load(tmp_path, "d.yaml", text)) == [("x", "x", 3000, "p2"), ("y", "y", 7, "p2")]


def test_legacy_ssh_names_are_read_and_win_over_the_new_ones_at_any_level_as_in_ansible(tmp_path: Path) -> None:
    text = """
    [old]
    a ansible_ssh_host=10.0.0.1 ansible_ssh_port=2201 ansible_ssh_user=legacy
    b ansible_host=10.0.0.2 ansible_ssh_host=10.0.0.3 ansible_user=new ansible_ssh_private_key_file=~/k
    c ansible_private_key_file=/new ansible_ssh_private_key_file=/old
    [old:vars]
    ansible_ssh_user=group-legacy
    [all:vars]
    ansible_user=ops
    """
    hosts = load(tmp_path, "old.ini", text)

    assert table(hosts) == [
        ("a", "10.0.0.1", 2201, "legacy"), ("b", "10.0.0.3", 22, "group-legacy"), ("c", "c", 22, "group-legacy")]
    assert [host.keys for host in hosts] == [(KEY,), (Path("~/k").expanduser(),), (Path("/old"),)]


def test_a_relative_key_is_from_the_current_directory_as_under_ansible(tmp_path: Path) -> None:
    [host] = load(tmp_path, "a.ini", "[g]\nh ansible_user=x ansible_ssh_private_key_file=keys/ops\n")

    assert host.keys == (Path("keys/ops"),)


def test_command_line_user_and_key_fill_in_and_are_required(tmp_path: Path) -> None:
    text = "[g]\nh1\nh2 ansible_user=me\n"

    message = refused(tmp_path, "a.ini", text, fallback=HostDefaults())

    assert "a.ini:2: h1: host 'h1' has no user: set ansible_user (for it or a group), or pass --user" in message
    assert "a.ini:2: h1: host 'h1' has no key: set ansible_ssh_private_key_file, or pass --key" in message
    assert "a.ini:3: h2: host 'h2' has no key" in message
    assert "(3 problems)" in message


def test_problems_of_hosts_left_out_by_limit_do_not_count(tmp_path: Path) -> None:
    text = "[ok]\na ansible_user=x\n[broken]\nb ansible_port=none ansible_host='{{ nope }}'\n"

    assert table(load(tmp_path, "a.ini", text, "ok")) == [("a", "a", 22, "x")]


def test_jinja_in_variables_recovery_does_not_read_is_ignored(tmp_path: Path) -> None:
    text = "[g]\nh ansible_user=x ansible_become_pass='{{ vault_pw }}' ansible_python_interpreter={{x}}\n"

    assert [host.name for host in load(tmp_path, "a.ini", text)] == ["h"]


def test_the_project_format_still_reads_and_takes_limit_by_name_and_glob(tmp_path: Path) -> None:
    text = """
    defaults: {user: ops, key: /k}
    hosts:
      - {name: web-1, host: 10.0.0.1}
      - {name: web-2, host: 10.0.0.2}
      - {name: db-1, host: 10.0.0.3}
    """
    assert [h.name for h in load(tmp_path, "fleet.yaml", text)] == ["web-1", "web-2", "db-1"]
    assert [h.name for h in load(tmp_path, "fleet.yaml", text, "web-*,db-1")] == ["web-1", "web-2", "db-1"]
    assert [h.name for h in load(tmp_path, "fleet.yaml", text, "db-1")] == ["db-1"]
    assert [h.name for h in load(tmp_path, "fleet.yaml", text, "all")] == ["web-1", "web-2", "db-1"]
    assert "'web' matches no host or group of the inventory (its groups: all)" in refused(
        tmp_path, "fleet.yaml", text, "web")


def test_a_project_file_without_defaults_and_a_hosts_list_at_column_zero(tmp_path: Path) -> None:
    text = "# comment\nhosts:   # the list\n# another\n- {name: a, host: h, user: u, key: /k}\n"

    assert [h.name for h in load(tmp_path, "fleet.yaml", text)] == ["a"]


def test_a_project_file_with_a_mistake_keeps_its_own_messages(tmp_path: Path) -> None:
    message = refused(tmp_path, "fleet.yaml", "hosts:\n  web-1:\n    host: 10.0.0.1\n")

    assert message == f"invalid inventory:\n  {tmp_path}/fleet.yaml:2: hosts: expected a non-empty list of hosts"


# --- refused: each names what and where --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("vault.yaml", """
         all:
           hosts:
             web1:
               ansible_become_pass: !vault |
                 $ANSIBLE_VAULT;1.1;AES256
                 6138
         """, "vault.yaml:4: a vault-encrypted value: recovery does not decrypt Ansible Vault"),
        ("vault-text.yaml", "all:\n  hosts:\n    h:\n  vars:\n    pw: \"$ANSIBLE_VAULT;1.1;AES256\\n6138\"\n",
         "vault-text.yaml:5: all.vars.pw: a vault-encrypted value"),
        ("vault.ini", "[g]\nh ansible_user=x\n[g:vars]\npw=$ANSIBLE_VAULT;1.1;AES256\n",
         "vault.ini:4: [g:vars].pw: a vault-encrypted value"),
        ("whole.ini", "$ANSIBLE_VAULT;1.1;AES256\n3338\n",
         "whole.ini:1: the inventory is encrypted with Ansible Vault, which recovery does not decrypt"),
        ("range.ini", "[web]\nweb[01:20].example.com\n",
         "range.ini:2: [web]: host 'web[01:20].example.com' is a host range, which recovery does not expand"),
        ("range.yaml", "all:\n  hosts:\n    'db-[a:f].example.com':\n",
         "range.yaml:3: all.hosts.db-[a:f].example.com: host 'db-[a:f].example.com' is a host range"),
        ("plugin.yaml", "plugin: openstack.cloud.openstack\nexpand_hostvars: true\n",
         "plugin.yaml:1: this is an Ansible inventory plugin's configuration (plugin: openstack.cloud.openstack)"),
        ("jinja.yaml", "all:\n  vars:\n    ansible_user: ops\n  hosts:\n    a:\n      ansible_host: '{{ ip }}'\n",
         "jinja.yaml:6: a: ansible_host: '{{ ip }}' is a Jinja template, which recovery does not evaluate"),
        ("jinja.ini", "[g]\nh ansible_user=x\n[g:vars]\nansible_port={{ p }}\n",
         "jinja.ini:4: h: ansible_port: '{{ p }}' is a Jinja template"),
        ("v6.ini", "[g]\n[2001:db8::5]:2022\n", "v6.ini:2: [g]: host '[2001:db8::5]:2022' is a host range"),
        ("winrm.ini", "[win]\nw1 ansible_connection=winrm ansible_user=x\n",
         "winrm.ini:2: w1: ansible_connection: 'winrm' is not SSH, which is all recovery speaks"),
        ("jump.yaml", "all:\n  vars:\n    ansible_ssh_common_args: '-o ProxyJump=bastion'\n  hosts:\n    a:\n",
         "jump.yaml:3: a: ansible_ssh_common_args: names a jump host (ProxyJump, ProxyCommand or -J)"),
        ("port.ini", "[g]\nh ansible_port=ssh ansible_user=x\n",
         "port.ini:2: h: ansible_port: expected a port number from 1 to 65535, got 'ssh'"),
        ("bigport.ini", "[g]\nh:70000\n", "bigport.ini:2: [g]: host 'h:70000': the port must be 1 to 65535"),
        ("digits.ini", "[g]\nh ansible_port=\u00b2 ansible_user=x\n",
         "digits.ini:2: h: ansible_port: expected a port number from 1 to 65535, got '\u00b2'"),
        ("deep.ini", "".join(f"[g{i}:children]\ng{i + 1}\n" for i in range(70)) + "[g70]\nh\n",
         "deep.ini: groups are nested more than 64 levels deep (down to 'g70')"),
        ("vars-undefined.ini", "[g]\nh\n[other:vars]\nansible_user=x\n",
         "vars-undefined.ini:3: [other:vars]: [other:vars] is for the group 'other', which no section defines"),
        ("child-undefined.ini", "[g]\nh\n[p:children]\ng\nmissing\n",
         "child-undefined.ini:5: [p:children]: [p:children] names the group 'missing', which no section defines"),
        ("section.ini", "[g]\nh\n[web servers]\nx\n",
         "section.ini:3: not a section header Ansible reads: '[web servers]'"),
        ("kind.ini", "[g:hosts]\nh\n", "kind.ini:1: not a section header Ansible reads: '[g:hosts]'"),
        ("novalue.ini", "[g]\nh ansible_user=x verbose\n",
         "novalue.ini:2: [g]: expected key=value host variables after the host name, got 'verbose'"),
        ("quote.ini", "[g]\nh ansible_user='x\n", "quote.ini:2: [g]: cannot read the host line: No closing quotation"),
        ("list.yaml", "all:\n  hosts:\n    - web1\n    - web2\n",
         "list.yaml:3: all.hosts: expected a mapping of host names"),
        ("key.yaml", "all:\n  hosts:\n    a:\n  host_vars:\n    a: {}\n",
         "key.yaml:4: all.host_vars: unknown key in a group (Ansible's are hosts:, children: and vars:"),
        ("loop.ini", "[a:children]\nb\n[b:children]\na\n[c]\nh\n",
         "loop.ini:2: groups are their own ancestors through children: (a, b)"),
        ("empty.yaml", "all:\n  children:\n    web:\n      hosts:\n",
         "empty.yaml: this Ansible inventory lists no hosts"),
    ],
)
def test_refused_with_what_and_where(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert expected in refused(tmp_path, name, text)


def test_groups_under_many_parents_at_many_levels_are_refused_quickly(tmp_path: Path) -> None:
    """A hostile file: 20 levels of 30 groups, each the child of all 30 above, needs millions of memberships."""
    lines = [f"[l{level}_{a}:children]\n" + "".join(f"l{level + 1}_{b}\n" for b in range(30))
             for level in range(20) for a in range(30)]
    text = "".join(lines) + "".join(f"[l20_{b}]\nh{b}\n" for b in range(30))

    assert "make more than 2,000,000 group memberships" in refused(tmp_path, "dag.ini", text)


@pytest.mark.parametrize("directory", ["group_vars", "host_vars"])
def test_a_vars_directory_beside_an_ansible_inventory_is_refused_only_when_it_exists(
    tmp_path: Path, directory: str
) -> None:
    text = "[g]\nh ansible_user=x\n"
    assert [host.name for host in load(tmp_path, "hosts.ini", text)] == ["h"]

    (tmp_path / directory).mkdir()

    message = refused(tmp_path, "hosts.ini", text)
    assert f"{tmp_path / directory} is beside the inventory" in message
    assert f"recovery does not read {directory}/" in message


def test_a_vars_directory_beside_a_project_inventory_is_not_its_business(tmp_path: Path) -> None:
    (tmp_path / "group_vars").mkdir()

    assert [h.name for h in load(tmp_path, "f.yaml", "hosts:\n  - {name: a, user: u, key: /k}\n")] == ["a"]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("web:!db", "'!db': exclusions (!) and intersections (&) are not supported"),
        ("web:&europe", "'&europe': exclusions (!) and intersections (&) are not supported"),
        ("~web\\d", "regular expressions (~) are not supported"),
        ("@retry.txt", "limit files (@FILE) are not read"),
        ("web[0]", "subscripts and ranges ([...]) are not supported"),
        ("webb", "'webb' matches no host or group of the inventory (its groups: all, db, europe, monitoring"),
        ("web:nope*", "'nope*' matches no host or group"),
        (" , ", "no host or group named"),
    ],
)
def test_limit_patterns_outside_the_subset_or_matching_nothing_are_refused(
    tmp_path: Path, limit: str, expected: str
) -> None:
    message = refused(tmp_path, "prod.yaml", NESTED_YAML, limit)

    assert message.startswith(f"--limit {limit!r}: ")
    assert expected in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = "[web]\nweb[1:3]\n[web:vars]\nsecret=$ANSIBLE_VAULT;1.1\n[db:vars]\nx=1\n"

    message = refused(tmp_path, "many.ini", text)

    assert message.startswith(f"invalid Ansible inventory (3 problems):\n  {tmp_path}/many.ini:2: ")
    assert [line.split(":")[1] for line in message.splitlines()[1:]] == ["2", "4", "5"]


# --- the command line ---------------------------------------------------------------------------


def test_audit_and_revoke_help_show_limit(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("audit", "revoke"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "-l PATTERN, --limit PATTERN" in out
        assert "Ansible" in out


@pytest.mark.parametrize("command", [["audit"], ["revoke", "--fingerprint", "SHA256:" + "A" * 43]])
def test_limit_with_cloud_is_a_usage_error(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code = main([*command, "--cloud", "x", "--user", "u", "--key", "/k", "-l", "web"])

    assert code == 2
    assert "--limit chooses hosts of an --inventory: with --cloud, use --server-filter REGEX" in capsys.readouterr().err


def test_audit_with_a_refused_limit_exits_2_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write(tmp_path, "hosts.ini", "[web]\nweb1 ansible_host=127.0.0.1 ansible_port=9\n")

    code = main(["audit", "--inventory", str(inventory), "--user", "u", "--key", "/k", "--limit", "all:!web"])

    assert code == 2
    assert "exclusions (!)" in capsys.readouterr().err


# --- any text: hosts or a usage error -----------------------------------------------------------

INI_PIECES = [
    "\n", " ", "[", "]", ":", "=", "#", ";", "'", '"', "web", "db", "1", "2222", "children", "vars", "all",
    "ungrouped", "ansible_host", "ansible_port", "ansible_user", "ansible_connection", "local", "{{", "}}",
    "$ANSIBLE_VAULT", "[01:20]", "hosts", "!vault ", "  ", "- ", "plugin", "\t", "é",
]  # fmt: skip


@settings(max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow],
          database=None, print_blob=True)
@given(st.lists(st.sampled_from(INI_PIECES), max_size=50).map("".join), st.sampled_from(["h.ini", "h.yaml", "h"]),
       st.sampled_from([None, "web", "all", "w*:db"]))
def test_any_text_is_hosts_or_a_usage_error(text: str, name: str, limit: str | None) -> None:
    try:
        hosts = load_any(text, Path("/nonexistent") / name, HostDefaults("ops", (KEY,)), limit)
    except UsageError:
        return
    assert all(isinstance(host, Host) and host.name and 1 <= host.port <= 65535 for host in hosts)


@settings(max_examples=300, deadline=timedelta(seconds=5), database=None, print_blob=True)
@given(st.lists(st.sampled_from(["a", "=", " ", "\t", "#", "'", '"', "\\", "x=1", "\u00a0", "\x0b", ";"]), max_size=20)
       .map("".join))
def test_host_lines_split_as_shlex_splits_them(line: str) -> None:
    try:
        expected = shlex.split(line, comments=True)
    except ValueError:
        with pytest.raises(ValueError, match=r"No closing quotation|No escaped character"):
            _words(line)
        return
    assert _words(line) == expected
