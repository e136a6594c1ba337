"""`recovery revoke`: take a stolen key out of every host of a fleet, and prove it no longer logs in.

`engine` does the work on each host (through `recovery.ssh.remote` and the guest removal script),
`keypairs` finds and (once confirmed) deletes the Nova key pairs holding the key for `--cloud`,
`render` writes the report (table, JSON, JUnit), `command` is the CLI contract.
"""
