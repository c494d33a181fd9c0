"""The README's Python examples run as written (on the CPU here)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1).strip().splitlines()
    assert first_block[0].split("#")[0].strip() == 'pip install -e ".[test]" && cachelab bench --model tiny-cogvideox'
    assert first_block[1].split("#")[0].strip() == "python -m pytest -q"
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\npython -m pytest -q\n" in ci  # CI runs the README's test command


def test_readme_examples_run(capsys):
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "ideal speedup" in printed and "attn.joint" in printed
    # the own-policy example ran on the README's CogVideoX pipeline: 6 blocks computed on 5 of 20 steps
    assert re.search(r"^block\s+6\s+30\s+90\s", printed, re.M), printed
    import cachelab

    assert "residual_skip" in cachelab.list_policies()
