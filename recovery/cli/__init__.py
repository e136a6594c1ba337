"""The `recovery` command: a thin shell over the Python API (`recovery.run`, `recovery.audit.check`).

It parses arguments, turns signals into a cancel token, prints and chooses exit codes; the
work itself happens in the library, so other programs can do everything the command does.
"""
