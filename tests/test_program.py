"""The whole program under mocks, as `pulumi up` would run it."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest

from components import config as stack_config
from training.stack_outputs import StackOutputs


def test_the_example_stack_declares_the_whole_pattern_and_exports_every_output(run_stack) -> None:
    recording = run_stack()
    components = {r.type for r in recording.resources if not r.custom}
    # The four steps of the pattern, each a component of ours.
    assert {
        "edge-training:cloud:MlWorkspace",
        "edge-training:edge:HubStorage",
        "edge-training:edge:HubNetwork",
        "edge-training:edge:HubVm",
    } <= components
    # Everything the training CLI reads is exported, with a value.
    wanted = set(StackOutputs.__dataclass_fields__)
    empty = {k for k, e in recording.exports.items() if e.value in (None, "", [], {})}
    missing = {f.name for f in fields(StackOutputs) if f.default is MISSING} - set(recording.exports)
    assert not missing, f"not exported: {sorted(missing)}"
    assert not (empty & wanted), f"exported empty: {sorted(empty & wanted)}"


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
