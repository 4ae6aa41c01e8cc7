"""The README's Python example runs as written and learns."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    ll = float(namespace["exact_log_likelihood"](namespace["model"], namespace["x"]).mean())
    # an independent-pixel model of Bernoulli(0.3) data scores about 64 * H(0.3) = -39.1 nats;
    # the untrained decoder (random logits around 0) scores about 64 * log(0.5) = -44.4
    assert ll > -41.0, ll
    assert "tensor(" in capsys.readouterr().out


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -q" in text and '"$PYTHON" -m pytest -q' in ci
    assert "pip install torch==2.13.0" in text
