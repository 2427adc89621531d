"""Config parsing, validation and the environment mapping: pure functions."""

from __future__ import annotations

import json

from mira.domain.config import Settings, changed_keys, load_settings, restart_required
from mira.domain.config.masking import masked_dict
from mira.domain.config.secret_refs import SecretRef, find_refs, parse_secret_ref


def load(
    data: object, env: dict[str, str] | None = None
) -> tuple[Settings | None, tuple[str, ...]]:
    result = load_settings(json.dumps(data), "config.json", env or {})
    return result.settings, result.errors


def test_empty_object_is_valid_and_gives_every_default() -> None:
    settings, errors = load({})
    assert errors == ()
    assert settings == Settings()
    assert settings.server.port == 5000 and settings.server.host == "0.0.0.0"
    assert settings.logging.level == "INFO" and settings.secrets.backend == "env"


def test_guide_basic_configuration_is_accepted() -> None:
    settings, errors = load(
        {
            "logging": {"level": "INFO", "json_format": True, "file": "/var/log/mira/app.log"},
            "config": {"hot_reload": True, "poll_interval": 5},
            "secrets": {"backend": "env", "auto_refresh": False},
        }
    )
    assert errors == ()
    assert settings is not None and settings.config.poll_interval == 5.0


def test_broken_json_names_file_line_and_column() -> None:
    result = load_settings('{\n  "logging": {"level": "INFO",}\n}', "/etc/mira/config.json", {})
    assert result.settings is None
    (error,) = result.errors
    assert error.startswith("/etc/mira/config.json: invalid JSON at line 2, column")


def test_every_error_is_listed_with_its_key_path() -> None:
    _, errors = load(
        {"logging": {"level": "LOUD", "colour": True}, "server": {"port": "80"}, "nope": 1}
    )
    joined = "\n".join(errors)
    assert "logging.level: must be one of DEBUG" in joined
    assert "logging.colour: unknown key" in joined
    assert "server.port: expected integer, got string" in joined
    assert "nope: unknown key" in joined
    assert len(errors) == 4


def test_booleans_are_not_integers_and_numbers_are_checked() -> None:
    _, errors = load({"server": {"port": True}, "config": {"poll_interval": -1}})
    assert any("server.port: expected integer, got boolean" in e for e in errors)
    assert any("config.poll_interval: must be at least 0.1" in e for e in errors)


def test_environment_overrides_the_file_which_overrides_defaults() -> None:
    settings, _ = load(
        {"logging": {"level": "WARNING", "json_format": True}},
        {
            "MIRA_LOG_LEVEL": "debug",
            "MIRA_LOG_JSON": "false",
            "MIRA_CONFIG_HOT_RELOAD": "1",
            "MIRA_SECRETS_BACKEND": "vault",
            "MIRA_SECRETS_AUTO_REFRESH": "yes",
            "MIRA_VAULT_URL": "https://vault:8200",
            "MIRA_VAULT_TOKEN": "s.abc",
            "MIRA_GITHUB_ENABLED": "true",
        },
    )
    assert settings is not None
    assert settings.logging.level == "DEBUG" and settings.logging.json_format is False
    assert settings.config.hot_reload and settings.secrets.auto_refresh
    assert settings.secrets.backend == "vault"
    assert settings.secrets.vault.url == "https://vault:8200"
    assert settings.secrets.vault.token == "s.abc"
    assert settings.integrations.github.enabled


def test_bad_environment_value_names_the_variable() -> None:
    _, errors = load({}, {"MIRA_LOG_JSON": "maybe", "MIRA_LOG_LEVEL": "chatty"})
    assert "environment: MIRA_LOG_JSON: expected true or false, got 'maybe'" in errors
    assert any(e.startswith("environment: MIRA_LOG_LEVEL: must be one of") for e in errors)


def test_conventional_variables_fill_only_what_the_file_leaves_unset() -> None:
    env = {"VAULT_ADDR": "http://from-env:8200", "GITHUB_TOKEN": "ghp_fromenv"}
    settings, _ = load({"secrets": {"vault": {"url": "http://from-file:8200"}}}, env)
    assert settings is not None
    assert settings.secrets.vault.url == "http://from-file:8200"
    assert settings.integrations.github.token == "ghp_fromenv"
    settings, _ = load({}, {**env, "MIRA_VAULT_URL": "http://mira:8200"})
    assert settings is not None and settings.secrets.vault.url == "http://mira:8200"


def test_secret_values_are_masked_in_repr_and_printed_config() -> None:
    settings, _ = load(
        {
            "integrations": {
                "github": {"token": "ghp_literal_value"},
                "jira": {"api_token": "secret://jira-credentials:api_token"},
            }
        }
    )
    assert settings is not None
    assert "ghp_literal_value" not in repr(settings)
    printed = masked_dict(settings)
    assert printed["integrations"]["github"]["token"] == "**********"
    assert printed["integrations"]["jira"]["api_token"] == "secret://jira-credentials:api_token"
    assert (
        masked_dict(settings, mask_refs=True)["integrations"]["jira"]["api_token"] == "**********"
    )


def test_shutdown_budget_that_cannot_fit_the_grace_period_is_rejected() -> None:
    _, errors = load({"shutdown": {"drain_delay": 10, "timeout": 25, "grace_period": 30}})
    assert any("does not fit in grace_period" in e for e in errors)


def test_secret_references_are_parsed_and_found() -> None:
    assert parse_secret_ref("secret://github-credentials:token") == SecretRef(
        "github-credentials", "token"
    )
    assert parse_secret_ref("secret://team/app/db") == SecretRef("team/app/db", None)
    assert parse_secret_ref("plain") is None
    settings, _ = load({"integrations": {"github": {"token": "secret://gh:token"}}})
    assert settings is not None
    assert find_refs(settings) == {"integrations.github.token": SecretRef("gh", "token")}
    _, errors = load({"integrations": {"github": {"token": "secret://gh:"}}})
    assert any("malformed secret reference" in e for e in errors)


def test_changed_keys_are_nested_leaf_paths_and_server_keys_need_restart() -> None:
    old, _ = load({})
    new, _ = load(
        {
            "logging": {"level": "DEBUG"},
            "server": {"port": 6000},
            "secrets": {"vault": {"mount_point": "kv"}},
        }
    )
    assert old is not None and new is not None
    keys = changed_keys(old, new)
    assert keys == ("logging.level", "secrets.vault.mount_point", "server.port")
    assert restart_required(keys) == ("secrets.vault.mount_point", "server.port")
    assert changed_keys(old, old) == ()


def test_top_level_must_be_an_object_and_bom_and_empty_are_explained() -> None:
    assert load_settings("[]", "c.json", {}).errors == (
        "c.json: the top level must be a JSON object",
    )
    assert "byte order mark" in load_settings("\ufeff{}", "c.json", {}).errors[0]
    assert "file is empty" in load_settings("  \n", "c.json", {}).errors[0]


def test_non_finite_and_absurd_numbers_are_rejected() -> None:
    result = load_settings('{"config": {"poll_interval": Infinity}}', "c.json", {})
    assert result.errors == (
        "c.json: invalid JSON: Infinity is not allowed (numbers must be finite)",
    )
    _, errors = load({"config": {"poll_interval": 1e300}, "server": {"max_body_bytes": 0}})
    assert any(
        e.startswith("config.json: config.poll_interval: must be at least 0.1 and at most")
        for e in errors
    )
    assert any("server.max_body_bytes: must be between 1 and" in e for e in errors)


def test_level_names_are_accepted_in_any_case_in_the_file_and_the_environment() -> None:
    settings, errors = load({"logging": {"level": "info"}})
    assert errors == () and settings is not None and settings.logging.level == "INFO"
    settings, _ = load({"logging": {"level": "Warning"}}, {"MIRA_LOG_LEVEL": "debug"})
    assert settings is not None and settings.logging.level == "DEBUG"
    settings, _ = load({"logging": {"level": "warning"}})
    assert settings is not None and settings.logging.level == "WARNING"
    _, errors = load({"logging": {"level": "verbose"}})
    assert errors == (
        "config.json: logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
        "got 'verbose'",
    )


def test_duplicate_keys_are_rejected_naming_the_key_path_and_line() -> None:
    text = '{\n  "logging": {\n    "level": "INFO",\n    "level": "DEBUG"\n  }\n}'
    assert load_settings(text, "/etc/mira/config.json", {}).errors == (
        "/etc/mira/config.json: duplicate key logging.level at line 4, column 5 "
        "(a key may appear once)",
    )
    top = load_settings('{"server": {}, "logging": {},\n"server": {}}', "c.json", {})
    assert top.errors == (
        "c.json: duplicate key server at line 2, column 1 (a key may appear once)",
    )
    # In a list, and with an escape that spells the same key: still the same key.
    nested = '{"x": [{}, {"k": 1, "\\u006b": 2}]}'
    (error,) = load_settings(nested, "c.json", {}).errors
    assert error.startswith("c.json: duplicate key x[1].k at line 1, column 21")
    # The same key in two different objects is no duplicate.
    assert load_settings('{"logging": {"level": "INFO"}, "x": {"level": 1}}', "c", {}).errors == (
        "c: x: unknown key (known keys: config, integrations, journal, logging, management, "
        "secrets, server, shutdown)",
    )


def test_intervals_and_timeouts_below_a_tenth_of_a_second_are_rejected() -> None:
    _, errors = load(
        {
            "config": {"poll_interval": 1e-9},
            "secrets": {"refresh_interval": 0.01, "max_backoff": 0.05, "stale_after": 1e-3},
            "integrations": {"github": {"timeout": 1e-6}, "jira": {"timeout": 0.0001}},
            "shutdown": {"hook_timeout": 0.001, "hooks_timeout": 0.01},
        }
    )
    prefix = "config.json: "
    paths = {e[len(prefix) :].split(":")[0] for e in errors}
    assert paths == {
        "config.poll_interval",
        "secrets.refresh_interval",
        "secrets.max_backoff",
        "secrets.stale_after",
        "integrations.github.timeout",
        "integrations.jira.timeout",
        "shutdown.hook_timeout",
        "shutdown.hooks_timeout",
    }
    assert (
        "config.json: config.poll_interval: must be at least 0.1 and at most 604800 seconds, "
        "got 1e-09"
    ) in errors
    _, errors = load({"secrets": {"vault": {"timeout": 0.0}}})
    assert errors == (
        "config.json: secrets.vault.timeout: must be at least 0.1 and at most 604800 seconds, "
        "got 0.0",
    )
    settings, errors = load({"config": {"poll_interval": 0.1, "debounce": 0}})
    assert errors == () and settings is not None and settings.config.poll_interval == 0.1


def test_a_rejected_value_is_quoted_only_by_a_short_prefix() -> None:
    huge = "A" * 9_000_000
    for data, env in (
        ({"logging": {"level": huge}}, {}),
        ({"secrets": {"vault": {"auth": {"method": huge}}}}, {}),
        ({"logging": {huge: 1}}, {}),
        ({}, {"MIRA_LOG_LEVEL": huge}),
        ({}, {"MIRA_LOG_JSON": huge}),
        ({"integrations": {"github": {"token": "secret://" + huge}}}, {}),
    ):
        _, errors = load(data, env)
        (error,) = errors
        assert len(error) < 300, error[:300]
        assert "9000000 characters" in error or "malformed secret reference" in error
    _, errors = load({"secrets": {"vault": {"kv_version": 10**100}}})
    (error,) = errors
    assert error.endswith("got 1000000000000000000000000000000000000000... (101 digits)")


def test_a_file_with_very_many_problems_lists_twenty_and_counts_the_rest() -> None:
    _, errors = load({f"unknown{i}": i for i in range(1000)})
    assert len(errors) == 21
    assert errors[-1] == "config.json: and 980 more problems"
