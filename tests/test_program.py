"""The whole program under mocks, as `pulumi up` would run it."""

from __future__ import annotations

import pytest

from components import config as stack_config


def test_the_example_stack_runs(run_stack) -> None:
    recording = run_stack()
    assert recording is not None


def test_the_private_key_must_reach_the_program_as_a_secret(run_stack) -> None:
    # Through the real runtime path: the engine's secret flag, not a test-only parameter.
    with pytest.raises(stack_config.ConfigError) as caught:
        run_stack(secret_keys=())
    assert caught.value.keys == {"sshPrivateKey"}


def test_the_training_settings_are_exported(run_stack) -> None:
    recording = run_stack({"experimentName": "churn"}, stack="prod")
    assert recording.exports["experimentName"].value == "churn"
    assert recording.exports["stackName"].value == "prod"
    assert not recording.exports["experimentName"].secret
