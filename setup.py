"""Packaging for patchmix-nb: everything is read from settings.ini (nbdev 2 layout).

No `pkg_resources` here: current setuptools no longer ships it.

The experiment notebook ships with the package. Its source stays nbs/experiments/experiment.ipynb (notebooks are the
source); `build_py` copies it into the built package as patchmix_nb/experiment.ipynb (into the build folder, never
into the source tree), so `pip install .` and a wheel carry it, and `sdist` carries its source. An editable install
(`pip install -e .`) reads the clone's nbs/ instead (patchmix_nb.launch.experiment_notebook).
"""
from configparser import ConfigParser
from pathlib import Path

import setuptools
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

requirements = cfg.get("requirements", "").split()
dev_requirements = cfg.get("dev_requirements", "").split()
scripts = [s.strip() for s in cfg.get("console_scripts", "").split("\n") if s.strip()]

NOTEBOOK = Path("nbs") / "experiments" / "experiment.ipynb"     # the source of the packaged experiment notebook
PACKAGED = "experiment.ipynb"                                    # its name inside the package


class BuildPy(build_py):
    "build_py, and the experiment notebook copied into the built package (patchmix_nb/experiment.ipynb)."

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False): return          # an editable install reads the clone's nbs/
        if not NOTEBOOK.exists():
            raise FileNotFoundError(f"{NOTEBOOK}: the experiment notebook is missing; build from a clone of the "
                                    "repository or its sdist")
        dest = self._packaged()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(NOTEBOOK), str(dest))

    def _packaged(self) -> Path: return Path(self.build_lib) / cfg["lib_path"] / PACKAGED

    def get_outputs(self, include_bytecode=True):
        extra = [] if getattr(self, "editable_mode", False) else [str(self._packaged())]
        return super().get_outputs(include_bytecode) + extra


class SDist(sdist):
    "sdist, with what a build from it reads: settings.ini and the experiment notebook's source."

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        for src in (Path("settings.ini"), NOTEBOOK):
            (Path(base_dir) / src).parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(src), str(Path(base_dir) / src))


setuptools.setup(
    name=cfg["repo"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license="Apache-2.0",
    packages=setuptools.find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    include_package_data=True,
    python_requires=">=" + cfg["min_python"],
    install_requires=requirements,
    extras_require={"dev": dev_requirements},
    entry_points={"console_scripts": scripts, "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    cmdclass={"build_py": BuildPy, "sdist": SDist},
    zip_safe=False,
)
