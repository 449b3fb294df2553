"""The package as a user installs it: a wheel built from the repository, installed outside the clone, runs a sweep
from a folder outside the clone, with the experiment notebook that ships in the package (patchmix_nb/experiment.ipynb,
copied there from nbs/experiments by setup.py's build_py) and no nbs/ folder to fall back on.

The wheel is built with this venv's pip and setuptools (no build isolation: nothing is downloaded) from a copy of the
repository's files, so the build leaves nothing (build/, egg-info) in the clone. The installed package runs on this
venv's interpreter, whose site-packages still hold the dependencies; PYTHONPATH puts the installed copy first."""
import importlib.util, json, os, shutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns('.venv', '.git', 'build', 'dist', '*.egg-info', 'runs', 'data', 'cache', '_docs',
                                     '_proc', '__pycache__', '.pytest_cache', '.ipynb_checkpoints', 'shared')


def _why_no_wheel() -> str | None:
    "Why a wheel cannot be built here without build isolation, or None."
    missing = [m for m in ('pip', 'setuptools') if importlib.util.find_spec(m) is None]
    if missing: return f"cannot build a wheel: {', '.join(missing)} not installed in {sys.prefix} (no build isolation)"
    if not (ROOT / 'setup.py').exists(): return f"{ROOT}: no setup.py (not a clone of the repository)"
    return None


pytestmark = pytest.mark.skipif(_why_no_wheel() is not None, reason=_why_no_wheel() or '')


def run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    "(wheel, site): the wheel built from a copy of the repository, installed with pip --target into `site`."
    tmp = tmp_path_factory.mktemp('package')
    src, dist, site = tmp / 'src', tmp / 'dist', tmp / 'site'
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', dist, '.'], cwd=src)
    wheel = next(dist.glob('patchmix_nb-*.whl'))
    run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--target', site, wheel], cwd=tmp)
    return wheel, site


def env_for(site: Path) -> dict:
    return {**os.environ, 'PYTHONPATH': str(site), 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'Agg'}


def test_wheel_carries_the_experiment_notebook(installed):
    wheel, site = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert 'patchmix_nb/experiment.ipynb' in names and not any(n.startswith('nbs/') for n in names)
    packaged = json.loads((site / 'patchmix_nb' / 'experiment.ipynb').read_text())
    source = json.loads((ROOT / 'nbs' / 'experiments' / 'experiment.ipynb').read_text())
    assert packaged['cells'] == source['cells']
    assert not (ROOT / 'patchmix_nb' / 'experiment.ipynb').exists()             # never copied into the clone


def test_installed_package_is_imported_from_outside_the_clone(installed, tmp_path):
    _, site = installed
    r = run([sys.executable, '-c', 'import patchmix_nb, sys; print(patchmix_nb.__file__)\n'
             'from patchmix_nb.launch import experiment_notebook, clone_notebook\n'
             "print(experiment_notebook()); print(clone_notebook('07_explore.ipynb'))"], cwd=tmp_path, env=env_for(site))
    module, nb, explore = r.stdout.strip().splitlines()
    assert Path(module).is_relative_to(site) and not Path(module).is_relative_to(ROOT)
    assert nb == str(site / 'patchmix_nb' / 'experiment.ipynb') and explore == 'None'


def test_sweep_runs_from_the_installed_package(installed, tmp_path):
    # one run of the smoke preset, executed as the packaged experiment notebook
    from patchmix_nb.config import Config, config_hash, make_config
    _, site = installed
    work, out = tmp_path / 'work', tmp_path / 'out'
    work.mkdir()
    r = run([sys.executable, '-m', 'patchmix_nb', 'sweep', '--preset', 'smoke', '--grid', 'method=ce', '--out', out,
             '--workers', 1, '--interval', 2], cwd=work, env=env_for(site), timeout=900)
    assert '1/1 done, 0 running, 0 failed, 0 queued' in r.stdout
    d = out / 'ce_seed1'
    assert (d / 'experiment.ipynb').exists() and (d / 'metrics.json').exists() and (d / 'figures').is_dir()
    assert (out / 'summary.md').exists() and (out / 'summary.csv').exists() and '| ce | 1 | 0 |' in r.stdout
    ex = json.loads((d / 'execution.json').read_text())
    assert ex['status'] == 'ok' and ex['notebook'] == str(site / 'patchmix_nb' / 'experiment.ipynb')
    assert config_hash(Config.load(d / 'config.json')) == config_hash(make_config('smoke', method='ce'))
    assert not any(work.iterdir())                                               # nothing written where it ran from
