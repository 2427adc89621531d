"""The `mira` command: `mira serve`, `mira config check|history|diff`, `mira events`,
`mira doctor`, `mira healthcheck`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from mira.domain.config.loading import ENV_FALLBACKS, ENV_OVERRIDES
from mira.domain.config.masking import masked_dict
from mira.domain.config.model import Settings
from mira.domain.config.schema import iter_keys
from mira.entrypoints import events_cli


def config_check(path: str) -> int:
    """Exit 0 printing the effective config (secrets masked), or 1 listing every error.

    The checks are start-up's own (`bootstrap.validate`): a config this accepts starts.
    """
    from mira.entrypoints.bootstrap import BootstrapError, validate

    try:
        settings, _ = validate(path, os.environ)
    except BootstrapError as exc:
        print(f"{path}: invalid: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(masked_dict(settings, mask_refs=True), indent=2))
    print(f"{path}: valid", file=sys.stderr)
    return 0


def config_reference() -> int:
    """Print every config key as a Markdown table (the source of DEPLOYMENT.md's reference)."""
    env = {path: name for name, (path, _) in ENV_OVERRIDES.items()}
    fallback = {path: name for name, (path, _) in ENV_FALLBACKS.items()}
    print("| Key | Type | Default | Environment | Meaning |")
    print("|---|---|---|---|---|")
    for key in iter_keys(Settings):
        default = json.dumps(key.default)
        names = [f"`{env[key.path]}`"] if key.path in env else []
        names += [f"`{fallback[key.path]}` (fallback)"] if key.path in fallback else []
        doc = key.doc.replace("|", "\\|")
        print(f"| `{key.path}` | {key.type} | `{default}` | {', '.join(names)} | {doc} |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mira", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("config", nargs="?", default="config.json")
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="action", required=True)
    check = config_sub.add_parser("check", help="validate and print the effective config")
    check.add_argument("config")
    config_sub.add_parser("reference", help="print every config key as a Markdown table")
    doctor = sub.add_parser("doctor", help="check every configured backend and integration")
    doctor.add_argument("config")
    health = sub.add_parser("healthcheck", help="exit 0 if /health answers 200 (HEALTHCHECK)")
    health.add_argument("config", nargs="?", help="default: the running service's config file")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    events_cli.register(sub, config_sub)
    args = parser.parse_args(events_cli.join_since(sys.argv[1:] if argv is None else argv))
    if getattr(args, "run", None) is not None:
        return events_cli.run(args)
    if args.command == "serve":
        from mira.entrypoints.web import serve as run

        return run(args.config)
    if args.command == "healthcheck":
        from mira.entrypoints.healthcheck import healthcheck

        return healthcheck(args.config, args.timeout)
    if args.command == "config":
        return config_check(args.config) if args.action == "check" else config_reference()
    from mira.entrypoints.doctor import doctor as run_doctor

    return run_doctor(args.config)


def run() -> int:
    """The console script: like main(), but quiet when its output pipe closes (`| head`)."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(run())
