"""Real vLLM on the CPU, for tests, the demo and benchmarks: install, tiny model, engine command.

- `install`: `ensure_vllm` (the engine virtualenv and the tiny model, cached by version), `locate`
- `command`: `VllmCommand`, the `EngineLauncher` command that serves a pod with vLLM
- `tinymodel`: the script that writes the tiny model (run by the engine virtualenv's interpreter)
"""
