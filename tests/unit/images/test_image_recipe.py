"""The base image's recipe: what it holds, its cache key, what it refuses; the package's surface."""

from __future__ import annotations

import dataclasses

import pytest

import qbox.agent.images as images
from qbox.agent.images import PYTHON_RECIPE, Recipe
from qbox.agent.images.recipe import RECIPE_VERSION


def test_python_recipe_key_is_pinned() -> None:
    # Changing this key makes every machine rebuild its base image and every
    # new sandbox use a new one. If the change is intended, update the value.
    assert PYTHON_RECIPE.key() == "python-824d56e1c89de965"


def test_python_recipe_has_what_a_sandbox_needs() -> None:
    needed = {"python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates", "procps", "bash",
              "python3-ipykernel", "python3-jupyter-client", "python3-numpy", "python3-pandas", "python3-matplotlib",
              "python3-pexpect"}  # fmt: skip
    assert needed <= set(PYTHON_RECIPE.packages)
    assert PYTHON_RECIPE.suite == "bookworm"
    assert PYTHON_RECIPE.variant == "minbase"
    user = PYTHON_RECIPE.user
    assert (user.name, user.uid, user.gid, user.home, user.shell) == (
        "user", 1000, 1000, "/home/user", "/bin/bash",
    )  # fmt: skip
    assert PYTHON_RECIPE.env == (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "MPLBACKEND=Agg",
    )
    assert PYTHON_RECIPE.working_dir == "/home/user"


def test_key_ignores_package_order_and_repeats() -> None:
    shuffled = dataclasses.replace(PYTHON_RECIPE, packages=tuple(reversed(PYTHON_RECIPE.packages)) + ("bash",))
    assert shuffled.key() == PYTHON_RECIPE.key()


@pytest.mark.parametrize(
    "change",
    [
        {"packages": PYTHON_RECIPE.packages + ("git",)},
        {"suite": "trixie"},
        {"version": RECIPE_VERSION + 1},
        {"variant": "apt"},
        {"working_dir": "/root"},
        {"wheels": ()},
        {"kernelspecs": ()},
        {"user_warmups": ()},
        {"compile_dirs": ("/usr/lib/python3",)},
    ],
)
def test_key_changes_with_the_recipe(change: dict[str, object]) -> None:
    changed = dataclasses.replace(PYTHON_RECIPE, **change)  # type: ignore[arg-type]
    assert changed.key() != PYTHON_RECIPE.key()
    assert changed.key().startswith("python-")


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ("python3", "--force")},
        {"packages": ("a,b",)},
        {"suite": "../x"},
        {"name": "Py"},
        {"compile_dirs": ("usr/lib",)},
        {"compile_dirs": ("/usr/../etc",)},
    ],
)
def test_odd_recipe_values_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(PYTHON_RECIPE, **change)  # type: ignore[arg-type]


def test_recipe_is_hashable_and_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PYTHON_RECIPE.suite = "sid"  # type: ignore[misc]
    assert isinstance(hash(Recipe(name="x1", suite="sid", packages=("bash",))), int)


def test_public_surface_is_pinned() -> None:
    assert sorted(images.__all__) == sorted(
        [
            "BUILTIN_TEMPLATE_NAME",
            "PYTHON_RECIPE",
            "CommandResult",
            "CommandRunner",
            "ImageConfig",
            "ImageInfo",
            "ImageStore",
            "Recipe",
            "RegistryCredentials",
            "SandboxUser",
            "SubprocessRunner",
            "base_image_ref",
            "machine_cache_dir",
            "ensure_base_image",
            "ensure_builtin_python",
        ]
    )
    for name in images.__all__:
        assert hasattr(images, name)
