"""OCI images on a host: the built-in base image and the content-addressed store.

``ensure_base_image(cache_dir)`` builds (once per machine) the built-in
template's image and returns a skopeo ref to it; ``ImageStore`` is what every
template's image goes through on an agent; ``ensure_builtin_python`` does
both for the ``python`` template. See docs/images.md for the operator's view.
"""

from qbox.agent.images.base_image import (
    BUILTIN_TEMPLATE_NAME,
    base_image_ref,
    ensure_base_image,
    ensure_builtin_python,
    machine_cache_dir,
)
from qbox.agent.images.recipe import PYTHON_RECIPE, Recipe, SandboxUser
from qbox.agent.images.refs import RegistryCredentials
from qbox.agent.images.runner import CommandResult, CommandRunner, SubprocessRunner
from qbox.agent.images.store import ImageStore
from qbox.agent.images.store_tree import ImageConfig, ImageInfo

__all__ = [
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
    "ensure_base_image",
    "ensure_builtin_python",
    "machine_cache_dir",
]
