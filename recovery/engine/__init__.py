"""The playbook engine: load a playbook, check it before anything changes, run its steps, keep the journal.

Nothing in here knows about SSH, consoles or clouds: step types bring that (`recovery.steps`,
and plug-ins through entry points), and the engine gives them templated inputs, retries,
timeouts, cleanups that always run, cancellation and a report.
"""
