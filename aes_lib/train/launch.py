"""The accelerate config files shipped with the project."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: name -> what it is for
ACCELERATE_CONFIGS = {
    "single_gpu": "one GPU, bf16",
    "multi_gpu": "DDP over the GPUs of one node",
    "fsdp": "FSDP 2 (sharded parameters, gradients, optimizer state)",
    "deepspeed_zero3": "DeepSpeed ZeRO-3 (the peers' full fine-tune recipe)",
}


def accelerate_config(name: str) -> Path:
    """Path of a shipped accelerate config (``aes_lib/accelerate_configs/<name>.yaml``)."""
    if name not in ACCELERATE_CONFIGS:
        raise ValueError(f"unknown accelerate config {name!r} (known: {', '.join(ACCELERATE_CONFIGS)})")
    return Path(str(resources.files("aes_lib").joinpath("accelerate_configs", f"{name}.yaml")))


def requested_cpu_processes(launcher_argv: list[str]) -> int:
    """Processes an ``accelerate launch --cpu`` command line asks for (1 when it is not one).

    accelerate starts a single process for ``--cpu`` (or ``use_cpu: true`` in its config file)
    whatever ``--num_processes`` says, so a number above 1 here means processes are missing.
    """
    import yaml
    from accelerate.commands.launch import launch_command_parser

    if "launch" not in launcher_argv or not any("accelerate" in a for a in launcher_argv[:3]):
        return 1
    try:
        args = launch_command_parser().parse_args(launcher_argv[launcher_argv.index("launch") + 1:])
    except SystemExit:
        return 1
    use_cpu, n = bool(args.cpu), args.num_processes
    if args.config_file and Path(args.config_file).is_file():
        cfg = yaml.safe_load(Path(args.config_file).read_text()) or {}
        use_cpu = use_cpu or bool(cfg.get("use_cpu"))
        n = n if n is not None else cfg.get("num_processes")
    return int(n) if use_cpu and n is not None else 1


def check_cpu_launch() -> None:
    """Refuse to run as one process when ``accelerate launch --cpu`` was asked for several.

    Reads the launcher's command line (the parent process, on Linux); does nothing under
    torchrun or a multi-process launch, where ``WORLD_SIZE`` is set.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true":
        return
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    n = requested_cpu_processes(argv)
    if n > 1:
        raise ValueError(
            f"accelerate launch --cpu started 1 process, not the {n} asked for (accelerate runs a "
            "single process for --cpu whatever --num_processes says). For several CPU processes use "
            f"`torchrun --standalone --nproc_per_node {n} -m aes_lib.cli train ...`, or `accelerate launch "
            f"--multi_gpu --num_processes {n} ...` without --cpu on a machine without GPUs.")
