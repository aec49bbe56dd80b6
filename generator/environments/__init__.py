"""Execution environments: conda specs solved, installed and packed per model version; the offline channel.

- `errors`: the spec and build errors;
- `settings`: the channels environments are solved from (`build/tritongen.toml`, $TRITONGEN_CONDA_CHANNELS);
- `stubs`: each target server's python backend stub, and stubs shipped in model folders;
- `envspec`: `envs/<name>.yml` parsed and checked against a target; the `backends/` packages;
- `solve`: the conda part solved with py-rattler;
- `install`: conda and pip installs into the build prefix, isolation hook, slimming;
- `pack`: conda-pack and unpacking;
- `cache`: `build_environment` (build or reuse by content hash) and cache pruning;
- `channel`: the offline `file://` conda channel;
- `cli`: `tritongen envs channel|build`.
"""
