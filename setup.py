"""Ship `nnunet_lightseg.pth` at the root of site-packages, for regular and editable installs.

The .pth file runs `nnunet_lightseg._startup_hook` when Python starts, which appends our
trainer-discovery folder to the `nnUNet_extTrainer` environment variable. That is how the stock
`nnUNetv2_train` / `nnUNetv2_predict` find our trainers with nothing for the user to set up
(docs/discovery.md). Everything else is declared in pyproject.toml.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "nnunet_lightseg.pth"  # a Python path-configuration file (site module), not a checkpoint
PTH_LINE = 'import sys; exec("try:\\n import nnunet_lightseg._startup_hook\\nexcept Exception:\\n pass")\n'


class build_py_with_pth(build_py):
    """Regular wheels: copy the .pth next to the package in build_lib."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, PTH), "w") as f:
            f.write(PTH_LINE)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


cmdclass = {"build_py": build_py_with_pth}

try:  # Editable installs (pip install -e .): add the .pth to the editable wheel too.
    from setuptools.command.editable_wheel import editable_wheel

    class _StrategyWithPth:
        def __init__(self, strategy):
            self._strategy = strategy

        def __enter__(self):
            self._strategy.__enter__()
            return self

        def __exit__(self, *exc):
            return self._strategy.__exit__(*exc)

        def __call__(self, wheel, files, mapping):
            self._strategy(wheel, files, mapping)
            wheel.writestr(PTH, PTH_LINE)

    class editable_wheel_with_pth(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithPth(super()._select_strategy(*args, **kwargs))

    cmdclass["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # very old setuptools: editable installs then need nnUNet_extTrainer by hand
    pass

setup(cmdclass=cmdclass)
