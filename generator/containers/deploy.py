"""`python -m generator.containers.deploy REPOSITORY`: the container deploy files of a repository.

Renders `docker-compose.yml` and `docker-run.sh` (`generator.pipeline.deploy`) serving an
existing repository folder, with the server settings its manifest records; `tritongen generate`
writes the same files into the repository itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from generator.base.launch import ServerPorts
from generator.kinds.targets import TARGETS
from generator.pipeline.deploy import render_deploy_files
from generator.serving.process import manifest_settings


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m generator.containers.deploy REPOSITORY [--target local|ngc] [--out DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m generator.containers.deploy")
    parser.add_argument("repository", help="repository path as the files should name it")
    parser.add_argument("--target", choices=sorted(TARGETS), default="local")
    parser.add_argument("--image", default=None, help="image (default: the target's)")
    parser.add_argument(
        "--ports", type=int, nargs=3, default=[8000, 8001, 8002], metavar=("HTTP", "GRPC", "METRICS"), help="host ports"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the files here")
    args = parser.parse_args(argv)
    # The manifest's settings (rate limiter, parallel loading); `generate` adds the target's pools.
    settings = manifest_settings(Path(args.repository))
    files = render_deploy_files(args.repository, ServerPorts(*args.ports), args.target, args.image, settings=settings)
    for name, text in files.items():
        if args.out is None:
            print(f"==> {name} <==\n{text}")
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / name
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
