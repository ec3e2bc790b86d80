"""One place maps each error class to its exit status, and every command follows it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from corridor import errors
from corridor.cli import cli


@pytest.mark.parametrize(("error", "code"), [
    (errors.SpecError("bad key", path="x.yaml", key="k"), 2),
    (errors.UnitError("bad unit"), 2),
    (errors.TraceError("bad line"), 2),
    (errors.RunDirError("damaged"), 2),
    (errors.EmulationError("the network failed"), 1),
    (errors.AgentError("rank 2 died"), 1),
    (errors.NeedsRootError("needs root"), 3),
    (errors.PlacementError("too few cores"), 2),
    (errors.ClusterError("server beta is gone"), 1),
])
def test_an_error_a_command_lets_through_exits_with_its_class_status(error: errors.CorridorError, code: int) -> None:
    @cli.command("raise-for-test")
    def raiser() -> None:
        raise error

    try:
        result = CliRunner().invoke(cli, ["raise-for-test"])
    finally:
        cli.commands.pop("raise-for-test", None)
    assert result.exit_code == code
    assert str(error) in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, errors.CorridorError)  # handled, not crashed


def test_the_same_bad_experiment_exits_2_from_run_and_from_capture(tmp_path: object) -> None:
    for argv in (["run", "no-such-experiment"], ["capture", "no-such-experiment", "--link", "x"]):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "no experiment file" in result.output


def test_every_class_has_a_status() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.CorridorError)]
    assert len(classes) >= 8
    assert all(c.exit_code in (1, 2, 3) for c in classes)
