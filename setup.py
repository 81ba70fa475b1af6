"""Maps the repository's top-level folders onto the ``eeghub`` import package.

The design keeps ``core/``, ``adapters/``, ``plugins/`` and ``config/`` at the top
of the repository; installing them as top-level packages would claim generic
names such as ``config`` in site-packages, so they are installed as
``eeghub.core``, ``eeghub.adapters`` and so on. Everything else is in
pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {
    "eeghub": "app",
    "eeghub.core": "core",
    "eeghub.adapters": "adapters",
    "eeghub.plugins": "plugins",
    "eeghub.config": "config",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for package, folder in ROOTS.items():
    package_dir[package] = folder
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "eeghub.adapters": ["postgres/migrations/*.sql"],
        "eeghub.config": ["*.toml"],
        "eeghub.plugins": ["console/templates/*.html", "console/static/*"],
    },
)
