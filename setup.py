"""Map the component folders into the `flotilla` package (metadata lives in pyproject.toml).

`operator/`, `router/` and `placement/` are the sources of `flotilla.operator`, `flotilla.router`
and `flotilla.placement`; a top-level `operator` package would shadow the standard library.
"""

from setuptools import find_packages, setup

COMPONENTS = ("operator", "router", "placement")

package_dir = {"flotilla": "flotilla"}
packages = find_packages(include=["flotilla", "flotilla.*"])
for component in COMPONENTS:
    package_dir[f"flotilla.{component}"] = component
    packages.append(f"flotilla.{component}")
    packages += [f"flotilla.{component}.{sub}" for sub in find_packages(component)]

setup(packages=packages, package_dir=package_dir)
