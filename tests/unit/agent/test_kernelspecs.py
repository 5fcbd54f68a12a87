from __future__ import annotations

import json
from pathlib import Path

from qbox.agent.images.kernelspecs import find_kernelspecs


def _spec(root: Path, directory: str, name: str, body: object) -> None:
    path = root / directory.lstrip("/") / name
    path.mkdir(parents=True)
    (path / "kernel.json").write_text(body if isinstance(body, str) else json.dumps(body))


def test_finds_valid_specs_in_both_places(tmp_path: Path) -> None:
    _spec(tmp_path, "/usr/share/jupyter/kernels", "python3",
          {"argv": ["python3", "-m", "ipykernel_launcher"], "language": "python",
           "display_name": "Python 3"})
    _spec(tmp_path, "/usr/local/share/jupyter/kernels", "bash",
          {"argv": ["python3", "-m", "bash_kernel"], "language": "bash", "display_name": "Bash"})
    _spec(tmp_path, "/usr/share/jupyter/kernels", "broken", "{not json")
    _spec(tmp_path, "/usr/share/jupyter/kernels", "nolang", {"argv": ["x"]})
    found = [s.to_json() for s in find_kernelspecs(tmp_path)]
    assert found == [{"name": "bash", "language": "bash", "displayName": "Bash"},
                     {"name": "python3", "language": "python", "displayName": "Python 3"}]


def test_an_image_without_kernels_has_none(tmp_path: Path) -> None:
    (tmp_path / "usr" / "share").mkdir(parents=True)
    assert find_kernelspecs(tmp_path) == []


def test_links_out_of_the_root_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _spec(outside, "/k", "evil", {"argv": ["x"], "language": "python"})
    root = tmp_path / "root"
    (root / "usr" / "share" / "jupyter").mkdir(parents=True)
    (root / "usr" / "share" / "jupyter" / "kernels").symlink_to(outside / "k")
    assert find_kernelspecs(root) == []
