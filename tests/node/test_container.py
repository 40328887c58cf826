"""The container's files agree with the project: the Dockerfile's pins and extras, the
compose file's settings and secrets, and the README's contributor commands.
(scripts/build_image.sh builds and runs the image itself, in CI.)"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import yaml

from node.cli.main import build_parser
from node.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile_arg(name: str) -> str:
    (value,) = re.findall(
        rf"^ARG {name}=\"?([^\"\n]*)\"?$", (ROOT / "Dockerfile").read_text(), re.M
    )
    return value


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_image_installs_the_torch_the_train_extra_pins() -> None:
    extras = _pyproject()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert f"torch=={_dockerfile_arg('TORCH_VERSION')}" in extras["train"]
    assert _dockerfile_arg("VERSION") == _pyproject()["version"]
    installed = _dockerfile_arg("EXTRAS").split(",")
    assert set(installed) <= set(extras) and {"train", "gpu", "nvidia"} <= set(installed)


def test_the_compose_node_sets_only_settings_the_node_knows(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    node = compose["services"]["node"]
    secret = tmp_path / "database_url"
    secret.write_text("postgresql+psycopg://asi:pw@db:5432/asi\n")
    env = {
        name: str(secret) if name.endswith("_FILE") else ""
        for name in node["environment"]
        if name.startswith("ASI_NODE_")
    }
    settings = load_settings(tmp_path, env=env)
    assert settings.database_url == "postgresql+psycopg://asi:pw@db:5432/asi"
    # Every secret a service mounts is defined, from a variable .env.example sets.
    example = (ROOT / ".env.example").read_text()
    for service in compose["services"].values():
        for name in service.get("secrets", []):
            variable = compose["secrets"][name]["environment"]
            assert re.search(rf"^{variable}=", example, re.M), variable


def test_the_confidential_vm_overlay_sets_a_tee_and_mounts_its_interface(tmp_path: Path) -> None:
    node = yaml.safe_load((ROOT / "compose.cvm.yaml").read_text())["services"]["node"]
    # Each value as Compose reads it with the variable unset: its default.
    env = {
        name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
        for name, value in node["environment"].items()
    }
    attestation = load_settings(tmp_path, env=env).attestation
    assert (attestation.provider, attestation.gpus) == ("sev-snp", False)
    mounted = [volume.split(":")[1] for volume in node["volumes"]]
    assert any(attestation.tsm_path.startswith(target + "/") for target in mounted)


def test_the_contributor_section_commands_parse() -> None:
    text = (ROOT / "README.md").read_text().split("## Contributing compute")[1].split("\n## ")[0]
    commands = [
        shlex.split(line.split("#")[0])
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    argvs = []
    for words in commands:
        if words[:3] == ["docker", "compose", "exec"]:
            argvs.append(words[words.index("asi-node") + 1 :])
        elif words[:3] == ["docker", "compose", "run"]:
            argvs.append(words[words.index("node") + 1 :])
    assert len(argvs) >= 4
    parser = build_parser()
    for argv in argvs:
        parser.parse_args(argv)
