"""``compare`` progress on stderr that is not a terminal: a line per run, no bar frames."""

from __future__ import annotations

import re

from pyro_dvae.comparison import run_comparison


def test_compare_logs_one_line_per_run(tiny_config, capsys):
    cfg = tiny_config(steps=4, seeds=(0, 1), eval_every=4, diag_samples=0)
    run_comparison("exact,st-gumbel", cfg, progress=True)
    err = capsys.readouterr().err  # pytest's capture: not a terminal
    assert "\r" not in err and "step/s" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    assert re.match(r"compare: exact seed 0 done \(1/4 runs, \d+\.\d\d nats, [\d.]+ s\)", lines[0])
    assert lines[3].startswith("compare: st-gumbel seed 1 done (4/4 runs")
