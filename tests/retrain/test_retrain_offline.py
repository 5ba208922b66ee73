"""``scones retrain`` end to end on the offline stack, with tiny training runs.

* a candidate that passes the gate goes to a canary variant beside production, is
  promoted, and the endpoint then answers with it (its version is the variant name in
  the records and in the capture layout);
* a candidate trained on shuffled labels is refused by the gate;
* a candidate that passes the gate but fails at serving is rolled back by the endpoint's
  error alarm.

The production model for the first and last is a "model" that guesses (tests/retrain/
tiny_models.py), so that a few seconds of training can beat it; the shuffled-label
candidate faces the shipped model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest
from scones_core.retraining.outcome import FAILED, REJECTED, alert_subject
from stopped_command import run_stopped

from scones.cli.main import main as scones_main
from scones.offline.retrain import OfflineRetrain, RetrainOptions, RetrainResult
from scones.paths import SHIPPED_MODEL_DIR
from scones.template_params import parameter_defaults
from tests.retrain.tiny_models import coin_flip_model

ENDPOINT = parameter_defaults()["EndpointName"]

# Each test trains for real and runs its own offline stack: one worker runs them in turn.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("retrain-offline")]

# Two fine-tuned members, 4 epochs at 96x96 on 60 images per label: seconds of training,
# and (seeded) good enough to beat a guessing production model with accepted accuracy 1.0.
# The ensemble recipe, as in SHORT_RECIPE (a student of so short a teacher is too unsure).
TINY_RECIPE = {
    "recipe": "ensemble",
    "epochs": 4,
    "members": 2,
    "resize": 96,
    "batch_size": 16,
    "threads": 2,
}


@pytest.fixture(scope="module")
def guessing_production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return coin_flip_model(tmp_path_factory.mktemp("coin-flip"))


def _training_inputs(argv: Sequence[str]) -> str:
    """What a training run depends on: its options (``--name value`` pairs, in any order)
    other than where it writes, and the bytes of every image in each of its channels."""
    digest, options = hashlib.sha256(), []
    for option, value in sorted(zip(argv[::2], argv[1::2], strict=True)):
        if option in ("--data", "--labelled"):
            for image in sorted(Path(value).rglob("*")):
                if image.is_file():
                    name, data = f"{option} {image.relative_to(value)}".encode(), image.read_bytes()
                    for part in (name, data):
                        digest.update(len(part).to_bytes(8, "big") + part)
        where = option in ("--data", "--labelled", "--model-dir", "--failure-file")
        options.append((option, "<run folder>" if where else value))
    digest.update(json.dumps(options).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def trainings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Where this module keeps each model folder it trained, named by its inputs; and the
    inputs of each training actually run."""
    return tmp_path_factory.mktemp("trained"), []


@pytest.fixture
def trained_once(trainings: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The canary tests train one seeded recipe on one dataset: the first run trains it
    for real, a later run with the same inputs gets a copy of that model folder (what
    its training job would write). Returns the inputs of each training actually run."""
    from scones.sagemaker import entry_point

    real_main = entry_point.main
    cache, ran = trainings

    def train(argv: Sequence[str] | None = None) -> int:
        assert argv is not None
        key = _training_inputs(argv)
        model_dir = Path(argv[list(argv).index("--model-dir") + 1])
        if (cache / key).is_dir():
            shutil.copytree(cache / key, model_dir, dirs_exist_ok=True)
            return 0
        ran.append(key)
        status = real_main(argv)
        if status == 0:
            shutil.copytree(model_dir, cache / key)
        return status

    monkeypatch.setattr(entry_point, "main", train)
    return ran


def retrain(production: Path, **options: object) -> RetrainResult:
    settings = RetrainOptions(
        production_model=production,
        recipe=dict(TINY_RECIPE),
        max_train_per_label=60,
        max_gate_per_label=15,
        canary_requests=12,
        after_promotion_requests=4,
    )
    for name, value in options.items():
        setattr(settings, name, value)
    messages: list[str] = []
    result = OfflineRetrain(settings, log=messages.append).run()
    decisions = [m for m in messages if m.startswith("[")]
    assert [s.name for s in result.steps] == [
        d[1 : d.index("]")] for d in decisions if not d.startswith("[deploy] canary")
    ]
    return result


def test_a_better_candidate_goes_to_canary_and_is_promoted(
    guessing_production: Path, trained_once: list[str]
) -> None:
    # A capture share below 100 % that the promoted variant must keep (its endpoint config
    # does on AWS); at 99 % the 4 requests after promotion all go uncaptured once in 10^8.
    result = retrain(guessing_production, overrides={"DataCaptureSamplingPercentage": "99"})
    assert result.outcome == "PROMOTED", result.to_json()
    gate = result.step("gate").detail
    assert gate["passed"] and gate["reasons"] == []
    evaluation = result.step("evaluate").detail
    version = evaluation["candidate"]["version"]
    assert evaluation["candidate"]["accuracy"] >= evaluation["production"]["accuracy"]
    assert evaluation["candidate"]["accepted_accuracy"] >= 0.99
    register = result.step("register").detail
    assert register["model_package_arn"].endswith("-models/1")
    assert register["metadata"]["candidate_version"] == version

    deploy = result.step("deploy").detail
    canary = f"model-{version}"
    assert deploy["canary_variant"] == canary and deploy["canary_share"] == 0.5
    assert {a["state"] for a in deploy["alarms"]} == {"OK"}
    # While baking, both variants answered, and the records say which one did.
    assert set(deploy["records_by_variant"]) == {"AllTraffic", canary}
    # After promotion the new version answers alone, as the endpoint's one variant (as
    # blue/green leaves it on AWS): where the monitor reads capture and the alarm looks.
    after = deploy["after_promotion"]
    assert set(after["records_by_variant"]) == {"AllTraffic"}
    assert sum(after["records_by_variant"]["AllTraffic"].values()) == 4
    assert after["model_versions"] == [version]
    # The candidate's endpoint config keeps the stack's capture share.
    assert after["capture_percent"] == 99.0
    assert after["capture_files"]
    assert all("/AllTraffic/" in f for f in after["capture_files"])
    assert result.record["outcome"] == "PROMOTED" and version in result.record["reason"]
    assert result.alert is not None and result.alert["subject"].endswith("promoted")
    # The monitor's drift baseline is the promoted model's own (as ReplaceDriftBaseline
    # makes it on AWS), not the guessing model's it replaced.
    assert deploy["drift_baseline"]["model_version"] == version
    assert "drift baseline" in result.record["reason"]


def test_a_candidate_trained_on_shuffled_labels_is_refused_by_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = scones_main(
        [
            "retrain",
            "--json",
            "--shuffle-labels",
            "--max-train-per-label",
            "20",
            "--max-gate-per-label",
            "15",
            "--hyperparameter",
            "epochs=1",
            "--hyperparameter",
            "resize=64",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    # stdout is the one document: the training and evaluation programs' lines (their
    # jobs' logs) go to stderr with the command's own log.
    printed = capsys.readouterr()
    assert json.loads(printed.out)["outcome"] == "REJECTED"
    assert "validation accuracy" in printed.err and "gate set" in printed.err
    [report_file] = out.glob("retrain-*.json")
    report = json.loads(report_file.read_text())
    assert report["outcome"] == "REJECTED"
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["publish"]["shuffled_labels"] is True
    assert not steps["gate"]["passed"]
    assert any("below production" in reason for reason in steps["gate"]["reasons"])
    assert "register" not in steps and "deploy" not in steps
    assert report["record"]["outcome"] == "REJECTED"
    assert report["alert"]["subject"] == alert_subject(REJECTED, ENDPOINT)
    assert (out / report_file.name.replace(".json", ".html")).is_file()
    markdown = (out / report_file.name.replace(".json", ".md")).read_text()
    assert "REJECTED" in markdown and "| gate | REFUSED" in markdown


def test_a_run_that_fails_leaves_its_record_alert_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gate set too small fails the dataset step, as on AWS: the run ends FAILED with a
    record and an alert (RecordFailed, AlertFailed) and its report; it left none."""
    out = tmp_path / "out"
    status = scones_main(["retrain", "--max-gate-per-label", "1", "--out", str(out)])
    assert status == 1
    assert "the retraining run failed: RetrainDatasetFunction failed" in capsys.readouterr().err
    [report_file] = out.glob("retrain-*.json")
    report = json.loads(report_file.read_text())
    assert report["outcome"] == "FAILED"
    assert report["record"]["outcome"] == "FAILED"
    assert "too small to judge a candidate by" in report["record"]["reason"]
    assert report["alert"]["subject"] == alert_subject(FAILED, ENDPOINT)
    assert [s["step"] for s in report["steps"]] == ["publish", "record"]
    page = (out / report_file.name.replace(".json", ".html")).read_text()
    assert "h1{color:#b3261e}" in page  # a failure reads as one, not in neutral grey


def test_an_evaluation_that_fails_ends_the_run_failed_with_its_record_and_alert(
    guessing_production: Path, trained_once: list[str], tmp_path: Path
) -> None:
    """A gate image the evaluation job cannot read fails EvaluateCandidate, as on AWS: the
    run ends FAILED with its record and alert, naming the gate object (not the job's
    temporary copy), instead of ending the command with no trace of the run."""
    from scones.offline.retrain import gate_split
    from scones.offline.retrain_recipe import DEFAULT_DATA

    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA, data)
    manifest = json.loads((guessing_production / "model.json").read_text())
    _, gate = gate_split(data, ("bicycle", "motorcycle"), manifest)
    broken = gate[0][0]
    broken.write_bytes(broken.read_bytes()[:60])
    result = retrain(guessing_production, data_dir=data)
    assert result.outcome == FAILED, result.to_json()
    document = result.to_json()
    reason = document["record"]["reason"]
    assert reason.startswith("the evaluation job failed: ") and "truncated" in reason, reason
    assert f"/gate/{broken.parent.name}/{broken.name}" in reason and "/tmp/" not in reason
    assert document["alert"]["subject"] == alert_subject(FAILED, ENDPOINT)
    assert [s.name for s in result.steps] == ["publish", "dataset", "train", "record"]


@pytest.mark.parametrize("members", ["8", "08"])
def test_the_dataset_step_holds_the_run_to_the_recipe_it_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], members: str
) -> None:
    """The rehearsal trains its own recipe, not the job's defaults: its dataset step checks
    each class against that recipe's split (6 images are enough for 4 members, not 8), as
    the training program reads it (``08`` is not JSON, and is 8 to the program)."""
    out = tmp_path / "out"
    argv = ["retrain", "--max-train-per-label", "6", "--hyperparameter", f"members={members}"]
    assert scones_main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the retraining run failed: RetrainDatasetFunction failed" in err
    assert "bicycle has 6 images: 1 held out for validation leaves 5, fewer than the 8" in err


def test_a_candidate_that_fails_at_serving_is_rolled_back(
    guessing_production: Path, trained_once: list[str]
) -> None:
    result = retrain(guessing_production, canary_faults={"model_error": -1})
    assert result.outcome == "ROLLED_BACK", result.to_json()
    assert len(trained_once) == 1  # the same options published the same training set
    assert result.step("gate").detail["passed"]
    deploy = result.step("deploy").detail
    alarms = {a["name"].split("-", 1)[1]: a for a in deploy["alarms"]}
    assert alarms["EndpointErrorAlarm"]["state"] == "ALARM"
    assert alarms["EndpointErrorAlarm"]["value"] > 0
    canary = deploy["canary_variant"]
    assert (
        deploy["invocations"][canary]["errors_5xx"] == deploy["invocations"][canary]["invocations"]
    )
    assert "after_promotion" not in deploy
    assert deploy["model_package_status"] == "Rejected"
    assert result.record["outcome"] == "ROLLED_BACK"
    assert "EndpointErrorAlarm" in result.record["reason"]
    assert result.alert is not None and result.alert["subject"].endswith("rolled back")


def test_fail_canary_alone_rehearses_a_rollback_against_a_model_that_guesses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trained_once: list[str]
) -> None:
    """`make retrain ARGS=--fail-canary` (the README's line): against the shipped model the
    short recipe's candidate is refused at the gate, so the canary was never reached and
    nothing was rolled back. Without --model, production is now a model that guesses."""
    import tempfile

    out = tmp_path / "out"
    before = set(Path(tempfile.gettempdir()).glob("scones-guessing-*"))
    argv = ["retrain", "--fail-canary", "--out", str(out), "--canary-requests", "12"]
    argv += ["--max-train-per-label", "60", "--max-gate-per-label", "15"]
    for name, value in TINY_RECIPE.items():
        argv += ["--hyperparameter", f"{name}={value}"]
    assert scones_main(argv) == 0
    printed = capsys.readouterr().out
    assert "production: a model that guesses (--fail-canary)" in printed
    assert "outcome: ROLLED_BACK: an alarm rolled the canary back" in printed
    [report_file] = out.glob("retrain-*.json")
    steps = {s["step"]: s for s in json.loads(report_file.read_text())["steps"]}
    assert steps["gate"]["passed"]
    assert steps["evaluate"]["production"]["accuracy"] < 0.7  # the guesser's
    assert set(Path(tempfile.gettempdir()).glob("scones-guessing-*")) == before
    # The command publishes the training set the other canary tests train on: run after
    # them (file order), it trains nothing of its own.
    assert len(trained_once) == 1
    # With --model, that model is production; both at once are refused.
    assert scones_main(["retrain", "--guessing-production", "--model", str(tmp_path)]) == 2
    assert "--guessing-production is the production model" in capsys.readouterr().err


def test_a_canary_that_served_nothing_is_rolled_back_not_promoted(
    guessing_production: Path, trained_once: list[str]
) -> None:
    """At 1 % of a short bake the canary got no request, so its alarm could not fire, and a
    candidate failing every request was promoted and then failed all traffic."""
    result = retrain(
        guessing_production,
        canary_faults={"model_error": -1},
        overrides={"CanaryCapacityPercent": "1"},
    )
    assert result.outcome == "ROLLED_BACK", result.to_json()
    assert len(trained_once) == 1  # the same options published the same training set
    deploy = result.step("deploy").detail
    assert deploy["invocations"][deploy["canary_variant"]]["invocations"] == 0
    assert "after_promotion" not in deploy
    assert deploy["model_package_status"] == "Rejected"
    assert "the canary served none of the 12 requests of its bake at 1%" in result.record["reason"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--hyperparameter", "epochs=abc"], "argument --epochs: invalid int value: 'abc'"),
        (["--hyperparameter", "bogus=1"], "unrecognized arguments: --bogus 1"),
        (["--hyperparameter", "lr=-1"], "learning_rate must be a finite number > 0"),
        (["--data", "/nonexistent/labelled"], "--data /nonexistent/labelled: no such folder"),
        (["--out", "/proc/retrain"], "--out /proc/retrain: cannot write there"),
    ],
)
def test_what_the_run_would_refuse_is_refused_before_the_stack_starts(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The training program's own argument checks and the folders are applied first: a
    typo costs no stack start and a training job, and leaves no temp folder."""
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("scones-retrain-*"))
    assert scones_main(["retrain", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert set(Path(tempfile.gettempdir()).glob("scones-retrain-*")) == before


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_run_stopped_by_a_signal_says_so_and_leaves_no_temporary_folder(
    stop: signal.Signals, tmp_path: Path
) -> None:
    """`timeout` and service managers send SIGTERM: it ended the run at once, with no word
    and its stack's work folder and channels left in the temporary folder. It now ends as
    Ctrl-C does."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    argv = ["retrain", "--max-train-per-label", "20", "--max-gate-per-label", "15"]
    argv += ["--hyperparameter", "epochs=1", "--out", str(tmp_path / "out")]
    code, _, err = run_stopped(
        argv, after="[dataset]", stop=stop, env={**os.environ, "TMPDIR": str(scratch)}
    )
    assert code == 130, err[-3000:]
    assert err.rstrip().endswith("scones: interrupted"), err[-3000:]
    # (onnxruntime leaves a .ses file of its own there, whoever runs it.)
    assert sorted(p.name for p in scratch.iterdir() if p.name != ".ses") == []


def test_a_stop_signal_while_the_stack_stops_at_the_end_lets_the_stop_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGTERM that comes while the run's stack stops (up to a minute) cut the stop short
    (model server and workers left running). It is now held until the stop is done: the
    report is written, then the command ends as interrupted."""
    import time

    from scones.offline import retrain as offline_retrain

    stopped: list[str] = []

    class Stack:
        def __init__(self, options: object) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            # Only with the command's handler in place: SIGTERM would end the test process.
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
                stopped.append("no handler for SIGTERM")
                return
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler has run by now
            stopped.append("done")

    def finished(self: OfflineRetrain, stack: object, work: Path) -> RetrainResult:
        return RetrainResult(
            outcome=REJECTED,
            run_name="r",
            steps=[],
            record={"pk": "retrain#r", "outcome": REJECTED, "reason": "the gate refused it"},
            alert=None,
            parameters=parameter_defaults(),
            started_at="2026-12-06T00:00:00Z",
        )

    monkeypatch.setattr(offline_retrain, "OfflineStack", Stack)
    monkeypatch.setattr(OfflineRetrain, "_run", finished)
    out = tmp_path / "out"
    assert scones_main(["retrain", "--model", str(SHIPPED_MODEL_DIR), "--out", str(out)]) == 130
    assert stopped == ["done"]
    printed = capsys.readouterr()
    assert "outcome: REJECTED" in printed.out and "scones: interrupted" in printed.err
    assert list(out.glob("retrain-*.json"))
