"""Pure rules of who may run code: exec task types, the exec scope, exec queues, the settings
that enable them and the environment a shell command gets."""

import pytest

from omoi.config import Settings
from omoi.domain.auth import BUILTIN_EXEC_TYPES, exec_types, refused_exec_types
from omoi.domain.routing import publish_queue, queue_for, queues_for_worker, served_by
from omoi.worker.shell import environment


def test_a_token_without_exec_may_not_submit_shell_or_http_or_marked_types() -> None:
    types = exec_types(["deploy", " "])
    assert types == {"shell", "http", "deploy"}
    submitted = ["noop", "shell", "deploy", "shell"]
    assert refused_exec_types(frozenset({"read", "submit"}), submitted, types) == [
        "deploy",
        "shell",
    ]
    assert refused_exec_types(frozenset({"submit", "exec"}), submitted, types) == []
    assert refused_exec_types(frozenset({"admin"}), submitted, types) == []
    assert refused_exec_types(frozenset({"submit"}), ["noop", "sleep"], types) == []


def test_an_exec_task_goes_to_a_queue_only_workers_that_enabled_it_consume() -> None:
    """One queue per capability carried every task type to every worker serving it."""
    assert publish_queue(queue_for(["gpu"]), "shell", BUILTIN_EXEC_TYPES) == "cap.gpu/shell"
    assert publish_queue(queue_for([]), "noop", BUILTIN_EXEC_TYPES) == "cap.default"
    plain = queues_for_worker(["gpu"])
    assert plain == ["cap.gpu", "cap.default"]
    assert "cap.gpu/shell" not in plain and "cap.default/http" not in plain
    enabled = queues_for_worker(["gpu"], ["shell"])
    assert enabled == ["cap.gpu", "cap.default", "cap.gpu/shell", "cap.default/shell"]
    assert served_by(enabled) == (["gpu", "default"], ["shell"])


def test_a_capability_name_cannot_reach_an_exec_queue() -> None:
    """Capabilities cannot hold the separator, so no worker's capability queue is an exec
    queue (a capability named ``default.shell`` is just that)."""
    assert queues_for_worker(["default.shell"]) == ["cap.default.shell", "cap.default"]
    assert served_by(["cap.default.shell"]) == (["default.shell"], [])


def test_a_worker_can_enable_only_exec_types_and_lists_parse_from_the_environment() -> None:
    env = {
        "OMOI_ENABLE_TASK_TYPES": "shell, deploy",
        "OMOI_EXEC_TASK_TYPES": "deploy",
        "OMOI_SHELL_ENV": "AWS_PROFILE,GIT_SSH_COMMAND",
        "OMOI_HANDLERS": "a, b",
    }
    settings = Settings.from_env(env)
    assert settings.enable_task_types == ("shell", "deploy")
    assert settings.exec_types == {"shell", "http", "deploy"}
    assert settings.shell_env == ("AWS_PROFILE", "GIT_SSH_COMMAND")
    assert settings.handlers == ("a", "b")
    assert Settings.from_env({}).enable_task_types == ()  # off unless enabled
    with pytest.raises(ValueError, match="'noop', which is not an exec task type"):
        Settings.from_env({"OMOI_ENABLE_TASK_TYPES": "noop"})


def test_the_operator_cannot_pass_omois_own_settings_to_shell_commands() -> None:
    with pytest.raises(ValueError, match="OMOI_SHELL_ENV may not pass"):
        Settings.from_env({"OMOI_SHELL_ENV": "PATH,omoi_database_url"})


def test_a_shell_command_gets_the_basics_and_what_the_operator_passed_only() -> None:
    """A command read OMOI_DATABASE_URL, OMOI_BOOTSTRAP_TOKEN and every other variable."""
    url = "postgresql://omoi:secret@db/omoi"
    worker = {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TZ": "UTC",
        "OMOI_DATABASE_URL": url,
        "OMOI_BOOTSTRAP_TOKEN": "omoi_admin",
        "AWS_SECRET_ACCESS_KEY": "k",
        "AWS_PROFILE": "ci",
        "DATABASE_URL": url,  # the same secret under another name, passed on by mistake
    }
    env = environment(worker, ["AWS_PROFILE", "DATABASE_URL"], [url, "redis://r:6379/0"])
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/w",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TZ": "UTC",
        "AWS_PROFILE": "ci",
    }
