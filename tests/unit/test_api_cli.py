"""`dispatcher event-types`: the catalogue on the command line, config types included."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dispatcher.cli import main


def test_event_types_lists_the_catalogue_with_config_types(tmp_path: Path) -> None:
    config = tmp_path / "dispatcher.toml"
    config.write_text('[event_types."invoice.paid"]\ndescription = "Paid"\n'
                      'sample = { id = "inv_1" }\n')
    env = {"DISPATCHER_DATA_DIR": str(tmp_path / "data"), "DISPATCHER_LOG__LEVEL": "warning"}
    runner = CliRunner()
    plain = runner.invoke(main, ["--config", str(config), "event-types"], env=env)
    assert plain.exit_code == 0, plain.output
    assert "wallets.transaction.created" in plain.output and "invoice.paid" in plain.output
    okx = runner.invoke(main, ["event-types", "--group", "okx", "--json"], env=env)
    assert okx.exit_code == 0, okx.output
    assert [t["name"] for t in json.loads(okx.output)] == ["block", "transaction"]
    mine = runner.invoke(main, ["--config", str(config), "event-types", "--group", "config",
                                "--json"], env=env)
    assert json.loads(mine.output) == [{"name": "invoice.paid", "description": "Paid",
                                        "group": "config", "source": "config",
                                        "sample": {"id": "inv_1"}}]


def test_a_bad_config_type_is_a_clean_error(tmp_path: Path) -> None:
    config = tmp_path / "dispatcher.toml"
    config.write_text('[event_types."bad name"]\ndescription = "x"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "event-types"],
                                env={"DISPATCHER_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 2
    assert "event_types.bad name" in result.output
