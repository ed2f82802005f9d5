import json

import pytest


def test_design_writes_a_readable_spec_with_provenance(run_cli, tmp_path):
    out = tmp_path / "design.json"
    result = run_cli(
        "design", "crossover", "--start", "2026-03-02", "--phase-days", "14", "--blackout-days", "7",
        "--name", "spring", "--seed", "4", "-o", out,
    )
    assert result.code == 0, result.stderr
    spec = json.loads(out.read_text())
    assert spec["kind"] == "crossover" and spec["end"] == "2026-03-29" and spec["phases"] == 2
    assert spec["name"] == "spring" and len(spec["salt"]) == 16
    assert spec["provenance"]["seed"] == 4 and "design crossover" in spec["provenance"]["command"]
    assert "spring: 2026-03-02 to 2026-03-29" in result.stderr


def test_same_seed_same_salt_without_seed_random(run_cli):
    args = ("design", "random-days", "--start", "2026-03-02", "--end", "2026-03-08", "-q")
    first, second = run_cli(*args, "--seed", "1"), run_cli(*args, "--seed", "1")
    assert first.stdout == second.stdout
    assert json.loads(run_cli(*args).text)["salt"] != json.loads(run_cli(*args).text)["salt"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["time-bound", "--start", "2026-03-09", "--end", "2026-03-02"], 65, "--end 2026-03-02 is before --start 2026-03-09"),
        (["crossover", "--start", "2026-03-02", "--phase-days", "7", "--blackout-days", "7"], 65, "--blackout-days 7 must be shorter"),
        (["random-days", "--start", "2026-03-02", "--end", "2026-03-09", "--treat-share", "1.5"], 65, "treat share 1.5"),
        (["time-bound", "--start", "2026-02-30", "--end", "2026-03-09"], 2, "'2026-02-30' is not a date in YYYY-MM-DD form"),
        (["weekly", "--start", "2026-03-02"], 2, "weekly"),
        (["time-bound", "--start", "2026-03-02", "--end", "2026-03-09", "--phase-days", "7"], 2, "--phase-days does not apply to a time-bound design"),
        (["triggered"], 65, "needs --duration-days"),
    ],
)
def test_bad_designs_exit_with_contract_codes(run_cli, tmp_path, args, code, message):
    out = tmp_path / "d.json"
    result = run_cli("design", *args, "-o", out)
    assert result.code == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_plot_draws_a_png(run_cli, tmp_path):
    png = tmp_path / "grid.png"
    result = run_cli("design", "triggered", "--duration-days", "10", "--plot", png, "-o", tmp_path / "d.json", "-q")
    assert result.code == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
