"""Environment specs: parsing, target checks, solving, content hashes (no server, no pyenv).

Solving runs py-rattler against a tiny real `file://` channel written by
`conda_channel.write_conda_package` (stand-in packages with a few files each).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from generator.environments import channel as conda_channel
from generator.environments import settings as environment_settings
from generator.environments.cache import HASH_LENGTH, content_hash
from generator.environments.cli import add_envs_subcommands
from generator.environments.cli import main as envs_main
from generator.environments.envspec import ENVS_DIR, local_packages, parse_environment_spec
from generator.environments.errors import EnvironmentSpecError
from generator.environments.settings import CHANNELS_VARIABLE, default_channels, recorded_channels, remember_channels
from generator.environments.solve import check_environment_spec, solve_environment
from generator.kinds.targets import PRODUCTION

SPEC = """\
name: {name}
channels: [conda-forge]
dependencies:
  - python={python}
  - {numpy}
  - pip
  - pip:
      - tokenizers==0.20.3
      - tritongen-textprep==1.0.0
"""


def write_spec(folder: Path, name: str = "prep", python: str = "3.11", numpy: str = "numpy<2") -> Path:
    path = folder / f"{name}.yml"
    path.write_text(SPEC.format(name=name, python=python, numpy=numpy))
    return path


@pytest.fixture
def backends(tmp_path: Path) -> Path:
    """A backends/ folder with one versioned package, tritongen-textprep 1.0.0."""
    package = tmp_path / "backends" / "textprep"
    (package / "tritongen_textprep").mkdir(parents=True)
    (package / "tritongen_textprep" / "__init__.py").write_text('__version__ = "1.0.0"\n')
    (package / "pyproject.toml").write_text('[project]\nname = "tritongen-textprep"\nversion = "1.0.0"\n')
    return tmp_path / "backends"


def make_channel(root: Path) -> str:
    """A real local channel: python 3.11.0/3.10.0, numpy 1.26.0/2.0.0 and pip 24.0."""
    subdir = root / conda_channel.PLATFORM
    packages = [
        ("python", "3.11.0", "0", []),
        ("python", "3.10.0", "0", []),
        ("numpy", "1.26.0", "py311_0", ["python 3.11.*"]),
        ("numpy", "2.0.0", "py311_0", ["python 3.11.*"]),
        ("pip", "24.0", "py311_0", ["python 3.11.*"]),
    ]
    for name, version, build, depends in packages:
        files = root / "files" / f"{name}-{version}"
        (files / "lib").mkdir(parents=True)
        (files / "lib" / f"{name}.txt").write_text(f"{name} {version}\n")
        conda_channel.write_conda_package(
            files, name=name, version=version, build=build, depends=depends, output_dir=subdir
        )
    conda_channel.index_channel(root)
    return conda_channel.channel_url(root)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_channel(tmp_path_factory.mktemp("channel"))


def test_parse_environment_spec(tmp_path: Path) -> None:
    spec = parse_environment_spec(write_spec(tmp_path))
    assert spec.name == "prep"
    assert spec.python == "3.11"
    assert spec.conda == ("python=3.11", "numpy<2", "pip")
    assert [(r.name, r.version) for r in spec.pip] == [
        ("tokenizers", "0.20.3"),
        ("tritongen-textprep", "1.0.0"),
    ]
    assert spec.declared_channels == ("conda-forge",)


def test_project_envs_are_valid_for_nvidias_stub() -> None:
    """Both targets get environments for the production stub (NGC 24.10: Python 3.10), no shipped stub."""
    specs = sorted(ENVS_DIR.glob("*.yml"))
    assert specs, "envs/ holds the environment specs"
    for path in specs:
        check_environment_spec(path, PRODUCTION.name)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("name: other\ndependencies: [python=3.11]\n", "must equal the file name"),
        ("dependencies: [python=3.11]\nextras: 1\n", "unknown keys"),
        ("dependencies: []\n", "non-empty list"),
        ("dependencies: [numpy<2]\n", "exactly one `python=3.X`"),
        ("dependencies: [python>=3.10]\n", "pinned to one minor version"),
        ("dependencies: [python=3.11, 'numpy >>2']\n", "invalid conda dependency"),
        ("dependencies: [python=3.11, {pip: [tokenizers==0.20.3]}]\n", "needs `pip`"),
        ("dependencies: [python=3.11, pip, {pip: [tokenizers>=0.20]}]\n", "exact pin"),
        ("dependencies: [python=3.11, pip, {pip: [a==1, A==2]}]\n", "twice"),
        ("dependencies: [python=3.11, {conda: [x]}]\n", "conda spec string or a `pip:` list"),
        ("- [", "is not YAML"),
    ],
)
def test_invalid_specs_name_the_environment_and_cause(tmp_path: Path, text: str, cause: str) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(text)
    with pytest.raises(EnvironmentSpecError, match="environment 'broken'") as raised:
        parse_environment_spec(path)
    assert cause in str(raised.value)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentSpecError, match="does not exist"):
        parse_environment_spec(tmp_path / "absent.yml")


def test_python_must_match_the_target_stub(tmp_path: Path, backends: Path) -> None:
    spec = write_spec(tmp_path, python="3.10")
    with pytest.raises(EnvironmentSpecError) as raised:
        check_environment_spec(spec, "local", backends_dir=backends)
    message = str(raised.value)
    assert "'prep'" in message and "Python 3.10" in message and "Python 3.11" in message
    check_environment_spec(spec, "ngc-24.10", backends_dir=backends)  # Ubuntu 22.04: 3.10
    check_environment_spec(spec, "local", backends_dir=backends, ship_stub=True)
    with pytest.raises(EnvironmentSpecError, match="Python 3.11 does not match"):
        check_environment_spec(write_spec(tmp_path), "ngc-24.10", backends_dir=backends)


def test_shipping_a_stub_needs_a_bundled_stub(tmp_path: Path, backends: Path) -> None:
    spec = write_spec(tmp_path, python="3.7")
    with pytest.raises(EnvironmentSpecError, match="no python backend stub for Python 3.7"):
        check_environment_spec(spec, "local", backends_dir=backends, ship_stub=True)


def test_unknown_target(tmp_path: Path, backends: Path) -> None:
    with pytest.raises(EnvironmentSpecError, match="unknown target 'ngc-99.01'"):
        check_environment_spec(write_spec(tmp_path), "ngc-99.01", backends_dir=backends)


@pytest.mark.parametrize("numpy", ["numpy", "numpy>=1.20", "numpy=2.0", "numpy<3"])
def test_numpy_2_is_refused_with_the_reason(tmp_path: Path, backends: Path, numpy: str) -> None:
    spec = write_spec(tmp_path, numpy=numpy)
    with pytest.raises(EnvironmentSpecError) as raised:
        check_environment_spec(spec, "local", backends_dir=backends)
    message = str(raised.value)
    assert "allows numpy>=2" in message and "numpy<2" in message
    assert "BYTES" in message and "2.51" in message


def test_numpy_2_pinned_by_pip_is_refused(tmp_path: Path, backends: Path) -> None:
    path = tmp_path / "prep.yml"
    path.write_text("dependencies: [python=3.11, pip, {pip: [numpy==2.1.0]}]\n")
    with pytest.raises(EnvironmentSpecError, match="numpy==2.1.0; it must be <2"):
        check_environment_spec(path, "local", backends_dir=backends)


def test_local_package_pin_must_equal_its_version(tmp_path: Path, backends: Path) -> None:
    path = write_spec(tmp_path)
    path.write_text(path.read_text().replace("tritongen-textprep==1.0.0", "tritongen-textprep==0.9.0"))
    with pytest.raises(EnvironmentSpecError) as raised:
        check_environment_spec(path, "local", backends_dir=backends)
    assert "tritongen-textprep==0.9.0" in str(raised.value) and "1.0.0" in str(raised.value)


def test_local_packages_are_found_by_normalized_name(backends: Path) -> None:
    found = local_packages(backends)
    assert list(found) == ["tritongen-textprep"]
    assert found["tritongen-textprep"].version == "1.0.0"


def test_solving_from_a_local_channel(tmp_path: Path, backends: Path, channel: str) -> None:
    check_environment_spec(write_spec(tmp_path), "local", channels=[channel], backends_dir=backends)
    records = solve_environment(parse_environment_spec(write_spec(tmp_path)), [channel])
    assert {r.name.normalized: str(r.version) for r in records} == {
        "python": "3.11.0",
        "numpy": "1.26.0",
        "pip": "24.0",
    }


def test_unknown_package_fails_naming_the_environment(tmp_path: Path, channel: str) -> None:
    path = tmp_path / "prep.yml"
    path.write_text("dependencies: [python=3.11, no-such-package]\n")
    with pytest.raises(EnvironmentSpecError, match="environment 'prep'.*cannot be solved"):
        check_environment_spec(path, "local", channels=[channel])


def test_unsolvable_spec_fails_naming_the_environment(tmp_path: Path, channel: str) -> None:
    path = tmp_path / "prep.yml"
    path.write_text("dependencies: [python=3.11, numpy<1]\n")
    with pytest.raises(EnvironmentSpecError, match="environment 'prep'.*cannot be solved"):
        check_environment_spec(path, "local", channels=[channel])


def test_unreachable_channel_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "prep.yml"
    path.write_text("dependencies: [python=3.11]\n")
    missing = (tmp_path / "nowhere").as_uri()
    with pytest.raises(EnvironmentSpecError, match="environment 'prep'"):
        check_environment_spec(path, "local", channels=[missing])


def test_content_hash_covers_spec_packages_and_target(tmp_path: Path, backends: Path, channel: str) -> None:
    spec = parse_environment_spec(write_spec(tmp_path))
    records = solve_environment(spec, [channel])
    package = local_packages(backends)["tritongen-textprep"]
    base = content_hash(spec, records, [package], "3.11")
    assert base == content_hash(spec, records, [package], "3.11")
    assert len(base) == HASH_LENGTH
    assert base != content_hash(spec, records, [package], "3.10")
    assert base != content_hash(spec, records, [], "3.11")
    (package.path / "tritongen_textprep" / "tokenize.py").write_text("# changed\n")
    assert base != content_hash(spec, records, [package], "3.11")
    other = parse_environment_spec(write_spec(tmp_path, numpy="numpy<1.27"))
    assert content_hash(other, records, [], "3.11") != content_hash(spec, records, [], "3.11")


def test_source_digest_ignores_build_outputs(backends: Path) -> None:
    package = local_packages(backends)["tritongen-textprep"]
    before = package.source_digest()
    cache = package.path / "tritongen_textprep" / "__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    (package.path / "tritongen_textprep.egg-info").mkdir()
    assert package.source_digest() == before


def test_written_conda_package_is_indexed(channel: str) -> None:
    folder = Path(channel.removeprefix("file://")) / conda_channel.PLATFORM
    repodata = json.loads((folder / "repodata.json").read_text())
    names = sorted(repodata["packages.conda"])
    assert "python-3.11.0-0.conda" in names and "numpy-2.0.0-py311_0.conda" in names
    record = repodata["packages.conda"]["numpy-1.26.0-py311_0.conda"]
    assert record["depends"] == ["python 3.11.*"] and len(record["sha256"]) == 64


def test_default_channels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$TRITONGEN_CONDA_CHANNELS > the project setting > conda-forge (--channel is the caller's)."""
    monkeypatch.setattr(environment_settings, "SETTINGS_FILE", tmp_path / "build" / "tritongen.toml")
    monkeypatch.delenv(CHANNELS_VARIABLE, raising=False)
    assert default_channels() == ["conda-forge"]
    remember_channels(["file:///project/build/conda-channel", 'file:///odd "name"'])
    assert recorded_channels() == ["file:///project/build/conda-channel", 'file:///odd "name"']
    assert default_channels() == ["file:///project/build/conda-channel", 'file:///odd "name"']
    monkeypatch.setenv(CHANNELS_VARIABLE, "file:///a, file:///b")
    assert default_channels() == ["file:///a", "file:///b"]


def test_a_broken_project_setting_is_reported(tmp_path: Path) -> None:
    settings = tmp_path / "tritongen.toml"
    settings.write_text("[environments]\nchannels = 'file:///one'\n")
    with pytest.raises(EnvironmentSpecError, match="channels must be a list"):
        recorded_channels(settings)
    settings.write_text("[environments\n")
    with pytest.raises(EnvironmentSpecError, match="unreadable project setting"):
        recorded_channels(settings)


def test_envs_channel_records_the_channel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`tritongen envs channel --channel URL` records a channel without building one."""
    settings = tmp_path / "tritongen.toml"
    monkeypatch.setattr(environment_settings, "SETTINGS_FILE", settings)
    monkeypatch.delenv(CHANNELS_VARIABLE, raising=False)
    assert envs_main(["channel", "--channel", "https://mirror.example/conda-forge"]) == 0
    assert default_channels() == ["https://mirror.example/conda-forge"]


def test_cli_subcommands_are_registered() -> None:
    parser = argparse.ArgumentParser(prog="tritongen")
    add_envs_subcommands(parser.add_subparsers(dest="command"))
    build = parser.parse_args(["envs", "build", "textprep-tok023", "--channel", "file:///c"])
    assert build.names == ["textprep-tok023"] and build.channels == ["file:///c"]
    assert build.target == "local" and callable(build.func)
    channel = parser.parse_args(["envs", "channel", "--python", "3.10", "--python", "3.11"])
    assert channel.pythons == ["3.10", "3.11"]


def test_cli_reports_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_spec(tmp_path, python="3.9")
    code = envs_main(["build", str(path), "--channel", (tmp_path / "c").as_uri()])
    assert code == 1
    assert "environment 'prep'" in capsys.readouterr().err


def test_envs_readme_documents_both_channels() -> None:
    readme = (ENVS_DIR / "README.md").read_text()
    assert "conda-forge" in readme and "tritongen envs channel" in readme
    assert CHANNELS_VARIABLE in readme


def test_content_hash_is_stable_across_channel_rebuilds(tmp_path: Path, channel: str) -> None:
    """The offline channel is rebuilt on each machine (new timestamps, so new sha256s, and
    another URL): environment names must not change with it."""
    import time

    started = int(time.time() * 1000)
    while int(time.time() * 1000) == started:
        pass  # the next millisecond: a later timestamp in every index.json
    other = make_channel(tmp_path / "elsewhere")
    spec = parse_environment_spec(write_spec(tmp_path))
    first, second = solve_environment(spec, [channel]), solve_environment(spec, [other])
    assert {r.sha256 for r in first} != {r.sha256 for r in second}
    assert content_hash(spec, first, [], "3.11") == content_hash(spec, second, [], "3.11")
