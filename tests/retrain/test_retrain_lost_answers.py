"""The retraining ASL when a SageMaker create succeeded but its answer was lost.

CreateModel and CreateEndpointConfig are not idempotent: SageMaker refuses a second create
of a name with ``ValidationException: Cannot create already existing model "<arn>".``
(``... endpoint configuration ...``). Their states retry a 5XX, so a first create that
went through but answered 500 (or timed out) is followed by that refusal. The run must
take the resource it finds as its own when it is the one it asked for, and still fail,
naming it, when another resource holds the name.

moto overwrites an existing model or endpoint config where SageMaker refuses, and cannot
lose an answer: ``AwsCreates`` makes its backend (the offline stack's moto server runs in
this process) answer as SageMaker does. The offline stack names a SageMaker error
``SageMaker.SageMakerException`` as Step Functions does (``interpreter_fixes``), so the
definition's retries run.

The deployed definition runs from CreateCandidateModel with its retry intervals cut to a
second (the waits are not under test); moto has no UpdateEndpoint, so a run that gets as
far as DeployCanary ends there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from moto.core.exceptions import JsonRESTError
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpointConfig, sagemaker_backends
from moto.sagemaker.utils import arn_formatter
from scones_core.retraining.dataset import RunNames

from scones.offline.stack import OfflineStack, StackOptions
from scones.template_params import parameter_defaults
from tests.retrain.test_retrain_asl import (
    ACCOUNT,
    entered_states,
    execute,
    moto_endpoint,
    outcome_of,
    own_package,
    passing_run,
)

pytestmark = [pytest.mark.xdist_group("retrain-asl-stack")]

REGION = "us-east-1"
MODEL, CONFIG = "model", "endpoint-config"


class InternalFailure(JsonRESTError):
    """SageMaker's 500: whether the request was carried out is unknown."""

    code = 500

    def __init__(self) -> None:
        super().__init__(
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        )


@dataclass
class AwsCreates:
    """moto's CreateModel and CreateEndpointConfig, answered as SageMaker answers them.

    ``lose``: (kind, name) whose first create is carried out but answers 500.
    ``fail``: (kind, name) whose creates answer 500 and create nothing.
    ``answers``: (kind, name, answer) for every create, in order.
    """

    lose: set[tuple[str, str]] = field(default_factory=set)
    fail: set[tuple[str, str]] = field(default_factory=set)
    answers: list[tuple[str, str, str]] = field(default_factory=list)

    def create(self, kind: str, name: str, exists: bool, arn: str, create: Any) -> Any:
        if (kind, name) in self.fail:
            self.answers.append((kind, name, "500"))
            raise InternalFailure()
        if exists:
            self.answers.append((kind, name, "refused"))
            described = "model" if kind == MODEL else "endpoint configuration"
            raise ValidationError(f'Cannot create already existing {described} "{arn}".')
        created = create()
        if (kind, name) in self.lose:
            self.lose.discard((kind, name))
            self.answers.append((kind, name, "created, 500"))
            raise InternalFailure()
        self.answers.append((kind, name, "created"))
        return created


@pytest.fixture(scope="module")
def stack() -> Iterator[OfflineStack]:
    with OfflineStack(StackOptions()) as running:
        yield running


@pytest.fixture
def creates(monkeypatch: pytest.MonkeyPatch, stack: OfflineStack) -> AwsCreates:
    backend = sagemaker_backends[ACCOUNT][REGION]
    fake = AwsCreates()
    create_model, create_config = backend.create_model, backend.create_endpoint_config

    def model(**kwargs: Any) -> Any:
        name = kwargs["model_name"]
        arn = arn_formatter("model", name, ACCOUNT, REGION)
        exists = name in backend._models
        return fake.create(MODEL, name, exists, arn, lambda: create_model(**kwargs))

    def config(**kwargs: Any) -> Any:
        name = kwargs["endpoint_config_name"]
        arn = FakeEndpointConfig.arn_formatter(name, ACCOUNT, REGION)
        exists = name in backend.endpoint_configs
        return fake.create(CONFIG, name, exists, arn, lambda: create_config(**kwargs))

    monkeypatch.setattr(backend, "create_model", model)
    monkeypatch.setattr(backend, "create_endpoint_config", config)
    return fake


def run_from_create(stack: OfflineStack, state: dict[str, Any], name: str) -> dict[str, Any]:
    return execute(stack, "CreateCandidateModel", state, f"lost-{name}")


def registered_run(stack: OfflineStack, run: str) -> dict[str, Any]:
    """A run whose candidate passed the gate and was registered; production unchanged."""
    state = passing_run(stack, run)
    state["model_package"] = {"arn": own_package(stack, "lost-answers", "PendingManualApproval")}
    moto_endpoint(stack, state["production"]["endpoint_config_name"])
    return state


@pytest.mark.parametrize("lost", [(MODEL,), (CONFIG,), (MODEL, CONFIG)])
def test_a_create_whose_answer_was_lost_is_taken_as_done(
    stack: OfflineStack, creates: AwsCreates, lost: tuple[str, ...]
) -> None:
    run = f"lost-{'-'.join(lost)}"
    state = registered_run(stack, run)
    base = state["dataset"]["names"]["base"]
    creates.lose = {(kind, base) for kind in lost}
    result = run_from_create(stack, state, run)
    entered = entered_states(stack, result["executionArn"])
    assert "DescribeFailure" not in entered, (result, creates.answers)
    for kind in lost:  # created, its answer lost; the retry refused as a duplicate
        answers = [answer for k, name, answer in creates.answers if (k, name) == (kind, base)]
        assert answers[:2] == ["created, 500", "refused"], creates.answers
    # moto has no UpdateEndpoint: the run goes as far as the canary.
    assert entered[-3:] == ["RecheckProduction", "ProductionUnchanged", "DeployCanary"], entered
    sagemaker = stack.client("sagemaker")
    model = sagemaker.describe_model(ModelName=base)
    # The registered version's own container, not the version: a versioned package must
    # be Approved to be deployed, and it is approved only once promoted.
    assert model["PrimaryContainer"]["ModelDataUrl"] == state["training"]["model_data_url"]
    assert "ModelPackageName" not in model["PrimaryContainer"]
    config = sagemaker.describe_endpoint_config(EndpointConfigName=base)
    assert [v["ModelName"] for v in config["ProductionVariants"]] == [base]


def another_model(stack: OfflineStack, name: str) -> None:
    stack.client("sagemaker").create_model(
        ModelName=name,
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
        PrimaryContainer={
            "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scones-serve:1",
            "ModelDataUrl": f"s3://{stack.bucket}/models/someone-elses/model.tar.gz",
        },
    )


@pytest.mark.parametrize("taken", [MODEL, CONFIG])
def test_a_name_held_by_another_resource_fails_the_run_naming_it(
    stack: OfflineStack, creates: AwsCreates, taken: str
) -> None:
    """Not a lost answer: something else holds the candidate's name. The candidate is not
    deployed on top of it; the run fails, its package is Rejected, and the reason says so."""
    run = f"taken-{taken}"
    state = registered_run(stack, run)
    base = state["dataset"]["names"]["base"]
    if taken == MODEL:
        another_model(stack, base)
    else:
        another_model(stack, f"{base}-other")
        stack.client("sagemaker").create_endpoint_config(
            EndpointConfigName=base,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{base}-other",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
    result = run_from_create(stack, state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    entered = entered_states(stack, result["executionArn"])
    assert "RecheckProduction" not in entered and "RejectFailedCandidate" in entered, entered
    reason = outcome_of(stack, run)["reason"]
    described = "a model" if taken == MODEL else "an endpoint config"
    assert reason.startswith(f"CandidateNameTaken: {described} named {base} "), reason
    assert "Cannot create already existing" in reason, reason  # the create's own error
    package = stack.client("sagemaker").describe_model_package(
        ModelPackageName=state["model_package"]["arn"]
    )
    assert package["ModelApprovalStatus"] == "Rejected"


def test_a_create_that_failed_keeps_its_own_error(stack: OfflineStack, creates: AwsCreates) -> None:
    """Nothing under the name: the create really failed, and its error is the reason (not
    the lookup's "Could not find model")."""
    run = "create-failed"
    state = registered_run(stack, run)
    base = state["dataset"]["names"]["base"]
    creates.fail = {(MODEL, base)}
    result = run_from_create(stack, state, run)
    assert (result["status"], result.get("error")) == ("FAILED", "RetrainingFailed"), result
    entered = entered_states(stack, result["executionArn"])
    assert "CreateCandidateEndpointConfig" not in entered, entered
    reason = outcome_of(stack, run)["reason"]
    assert reason.startswith("SageMaker.SageMakerException: The request processing has failed")
    assert "Could not find model" not in reason, reason


def test_the_retraining_role_may_describe_the_candidates_model_and_config() -> None:
    """The look-ups after a failed create are allowed on the names the run creates."""
    from tests.workflow.iam_policy import ALLOW, Request, decide, role_statements
    from tests.workflow.test_workflow_template import resolver_for, transformed

    statements = role_statements(resolver_for(transformed()), "RetrainingStateMachineRole")
    me = ("AWS", f"arn:aws:iam::{ACCOUNT}:role/retraining")
    base = RunNames.for_run(
        parameter_defaults()["EndpointName"], datetime(2026, 12, 1, tzinfo=UTC), "run"
    ).base
    for action, kind in (
        ("sagemaker:DescribeModel", "model"),
        ("sagemaker:DescribeEndpointConfig", "endpoint-config"),
    ):
        arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{base}"
        assert decide(statements, Request(action, arn, me, {})) == ALLOW, action
