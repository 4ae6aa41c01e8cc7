"""Progress on stderr that is not a terminal (a log file, a pipe): a line per epoch, no frames."""

from __future__ import annotations

import io
import re

from _training_run import tiny

from pyro_dvae.training import train
from pyro_dvae.utils.progress import is_terminal, progress_bar


def test_train_logs_one_line_per_epoch_without_bar_frames(capsys):
    # 1397 digits / batch 300: 5 steps per epoch, 3 epochs
    train(tiny(epochs=3, max_steps=None, batch_size=300), progress=True)
    err = capsys.readouterr().err  # pytest's capture: not a terminal
    assert "\r" not in err and "it/s" not in err and "step/s" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    for epoch, line in enumerate(lines, 1):
        pattern = rf"epoch {epoch}: step {5 * epoch}/15, loss \d+\.\d\d, valid -ELBO \d+\.\d\d"
        assert re.match(pattern, line), line
        assert "tau 1.000" in line  # gumbel-softmax is relaxed


def test_no_progress_prints_nothing(capsys):
    train(tiny(max_steps=3), progress=False)
    assert capsys.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_is_drawn_on_a_terminal_only():
    term, log = _Terminal(), io.StringIO()
    assert is_terminal(term) and not is_terminal(log)
    for stream in (term, log):
        bar = progress_bar(enabled=True, total=4, file=stream, mininterval=0)
        for _ in range(4):
            bar.update(1)
        bar.close()
    assert "4/4" in term.getvalue() and log.getvalue() == ""
