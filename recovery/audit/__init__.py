"""`recovery audit`: does the expected key still log in to every VM of a fleet, and if not, why?

One module per job:

    model.py            hosts, results, the report (plain dataclasses)
    inventory.py        the YAML inventory, checked with file:line for every problem
    cloud_inventory.py  a cloud's servers as hosts (`--cloud`), and console checks
    shard.py            `--shard I/N`, a stable split by host name
    engine.py           one host's check over SSH (libssh2), host keys and failures named
    scheduler.py        worker threads, results in order, Ctrl-C keeps what is done
    progress.py         the live line on a terminal
    remediate.py        recovery playbook runs for failed hosts, within a limit
    render.py           table, JSON, JUnit XML, Prometheus textfile
    command.py          the command itself: flags, wiring, exit codes

Nothing is imported here, so `recovery --help` does not load any of it.
"""
