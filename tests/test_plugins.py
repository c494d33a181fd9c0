"""Policies from outside the package: ``--plugin MODULE``, entry points in the group ``cachelab.policies``, name
conflicts, and the README's plugin commands run as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cachelab
from cachelab.policies import registry

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

POLICY_MODULE = textwrap.dedent('''
    from pydantic import Field
    from cachelab.policies import Policy, PolicyConfig, register_policy


    class EveryOtherConfig(PolicyConfig):
        interval: int = Field(2, ge=1, le=8, description="compute every n-th step",
                              json_schema_extra={"search": {"low": 1, "high": 4}})


    @register_policy("{name}")
    class EveryOther(Policy):
        """Reuse every attention output between full steps (a plugin written outside cachelab)."""

        Config = EveryOtherConfig

        def select(self, sites):
            return sites.by_role("attn.joint", "attn.spatial", "attn.temporal")

        def compute_at(self, site, ctx):
            return ctx.step % self.config.interval == 0
''')


def cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console command in a fresh process (plugins and entry points load there as for a user)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-c", "from cachelab.cli import main; main()", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def readme_policy_module() -> str:
    """The README's own policy, as a user would save it in ``my_policies.py``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if '@register_policy("residual_skip")' in b)
    return block.split("\n\nwith cachelab.apply")[0] + "\n"


def test_readme_plugin_commands_run_as_written(tmp_path):
    (tmp_path / "my_policies.py").write_text(readme_policy_module())
    section = README.read_text().split("### Policies from your own package")[1]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    assert len(commands) == 2
    outputs = []
    for line in commands:
        argv = shlex.split(line.split("#")[0])
        assert argv[0] == "cachelab"
        done = cli(*argv[1:], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert "residual_skip" in outputs[0] and "every" in outputs[0]
    table = (tmp_path / "bench-out" / "tiny-cogvideox.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| residual_skip |"))
    assert "refuses" not in row and "x |" in row  # a measured row with a speedup, not an error


def test_plugin_reaches_run_and_search_workers(tmp_path):
    (tmp_path / "user_policies.py").write_text(POLICY_MODULE.replace("{name}", "every_other_plugin"))
    plugin = str(tmp_path / "user_policies.py")
    done = cli("--plugin", plugin, "run", "--model", "tiny-random-cogvideox", "--prompt", "a red circle moving left",
               "--policy", "every_other_plugin", "--param", "interval=3", "--steps", 6, "--out", tmp_path / "v.gif",
               "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "v.gif").is_file()
    # two worker processes: each loads the plugin from the run's payload, or their trials would fail
    done = cli("--plugin", plugin, "search", "--model", "tiny-random-cogvideox", "--policy", "every_other_plugin",
               "--trials", 4, "--workers", 2, "--prompts", 1, "--steps", 6, "--no-progress", "--seed", 0,
               "--out", tmp_path / "search", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list((tmp_path / "search" / "workers").glob("*.error"))
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'search' / 'study.db'}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 4 and {t.user_attrs["worker"]["pid"] for t in finished}.isdisjoint({os.getpid()})


def test_unknown_plugin_module_is_a_clear_error(tmp_path):
    done = cli("--plugin", "no_such_policies_module", "policies", cwd=tmp_path)
    assert done.returncode != 0
    assert "plugin 'no_such_policies_module': no module named 'no_such_policies_module'" in done.stderr


def write_distribution(root: Path, entries: dict[str, str], modules: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata sees it: a dist-info folder with entry points."""
    info = root / "user_caches-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: user-caches\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[cachelab.policies]\n{lines}")
    for name, text in modules.items():
        (root / f"{name}.py").write_text(text)


def test_entry_points_register_policies(tmp_path):
    class_only = POLICY_MODULE.replace('@register_policy("{name}")\n', "")
    write_distribution(
        tmp_path,
        {"every_other_ep": "user_decorated", "every_other_cls": "user_plain:EveryOther", "broken_ep": "user_broken"},
        {"user_decorated": POLICY_MODULE.replace("{name}", "every_other_ep"), "user_plain": class_only,
         "user_broken": "raise RuntimeError('this plugin needs a GPU library')\n"},
    )
    env = {"PYTHONPATH": str(tmp_path)}
    listed = cli("policies", "every_other*", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "every_other_ep" in listed.stdout and "every_other_cls" in listed.stdout
    assert "plugin 'broken_ep' (user_broken) failed to load: this plugin needs a GPU library" in listed.stderr
    asked = cli("run", "--model", "tiny-random-cogvideox", "--prompt", "x", "--policy", "broken_ep",
                "--out", tmp_path / "v.gif", "--steps", 2, "--device", "cpu", cwd=tmp_path, env=env)
    assert asked.returncode != 0
    assert "policy 'broken_ep' comes from a plugin that failed to load: user_broken: RuntimeError" in asked.stderr


@pytest.fixture
def clean_registry():
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_registering_a_taken_name_raises_unless_replacing(clean_registry):
    original = cachelab.policy_class("pab")

    class MyPab(original):
        pass

    with pytest.raises(cachelab.PolicyError, match=r"policy name 'pab' is already registered by "
                                                    r"cachelab\.policies\.pab\.Pab; .*replace=True"):
        cachelab.register_policy("pab")(MyPab)
    assert cachelab.policy_class("pab") is original
    cachelab.register_policy("pab", replace=True)(MyPab)
    assert cachelab.policy_class("pab") is MyPab


def test_loading_a_plugin_file_twice_registers_once(tmp_path, clean_registry):
    path = tmp_path / "twice.py"
    path.write_text(POLICY_MODULE.replace("{name}", "every_other_twice"))
    cachelab.load_plugin(str(path))
    cachelab.load_plugin(str(path))
    assert cachelab.list_policies("every_other_twice") == ["every_other_twice"]
    assert str(path) in registry.loaded_plugins()
