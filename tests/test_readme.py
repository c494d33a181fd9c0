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
    assert "CFG difference smallest at step" in printed  # the analyze example ran


def test_readme_report_commands_run(tmp_path, monkeypatch):
    """The `cachelab report` lines of the README's report block, on a study where the README's search puts one."""
    import shlex

    from click.testing import CliRunner

    from cachelab.cli import main

    blocks = [b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S) if "cachelab report" in b]
    assert blocks, "the README has no `cachelab report` block"
    from test_report import make_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    make_study(Path("runs/tiny-latte-pab"), name="tiny-latte-pab", trials=3, model=None)  # no plans: fast
    lines = [shlex.split(line, comments=True) for line in blocks[0].splitlines() if line.startswith("cachelab report")]
    assert lines
    for args in lines:
        res = CliRunner().invoke(main, args[1:])
        assert res.exit_code == 0, (args, res.output)
        assert "wrote " in res.output


def test_readme_ablations_are_valid():
    """Every `cachelab ablate` line parses and its spec validates with those options; the YAML example resolves.
    (Running the ablations takes minutes: tests/test_ablate.py runs small ones.)"""
    import shlex

    import yaml

    from cachelab.ablation import AblationSpec, load_spec, resolve_arms
    from cachelab.cli import ablate

    text = README.read_text()
    lines = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.splitlines() if line.startswith("cachelab ablate")]
    assert lines
    for line in lines:
        p = ablate.make_context("ablate", shlex.split(line)[2:]).params
        resolve_arms(load_spec(README.parent / p["spec_path"], model=p["model_name"], prompts=p["num_prompts"],
                               steps=p["steps"], repeats=p["repeats"]))
    specs = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    assert any("arms" in s for s in specs)
    for s in specs:
        if "arms" in s:
            resolve_arms(AblationSpec(**s))


def test_readme_search_commands_parse_and_their_spaces_build():
    """Every `cachelab search` line parses, and its policies with its --space file make a valid search space (the
    searches themselves take minutes: tests/test_search.py runs small ones)."""
    import shlex

    from cachelab.cli import search
    from cachelab.search.space import build_space

    lines = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
             for line in block.splitlines() if line.startswith("cachelab search")]
    assert any("--space" in line for line in lines)
    for line in lines:
        p = search.make_context("search", shlex.split(line)[2:]).params
        space = build_space("+".join(p["policy"]) or "fastercache", README.parent / p["space"] if p["space"] else None)
        assert space.params, line
