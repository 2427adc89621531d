"""The plans app, built on the Mira runtime: generate_plan, and publish_plan to GitHub or Jira.

`wiring` installs it on a container; nothing under `mira/` outside this package imports it
except the composition root.
"""
