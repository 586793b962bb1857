"""Scripts with subcommands take their flags before or after the subcommand (`x.sh --dry-run up ...` plans
exactly what `x.sh up --dry-run ...` does), and say when the subcommand is missing, unknown or given twice."""
import pytest

SLICE = ("--zone", "us-east5-a", "--accelerator-type", "v5p-64", "--config", "configs/bagel_7b_rt2i.py",
         "--workdir", "gs://bucket/runs/r1")
CASES = {  # script: (subcommand, its flags, trainer flags after --)
    "tpu_pod.sh": ("up", ("--name", "grpo", *SLICE), ("--", "--config.total_steps=100")),
    "tpu_queued.sh": ("up", ("--qr-id", "grpo-ms", "--node-count", "2", *SLICE), ("--", "--config.total_steps=9")),
    "reward_server.sh": ("serve", ("--backend", "vllm", "--gpus", "0,1", "--tp", "2", "--port", "31000"), ()),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_flags_before_or_after_the_subcommand(launch, script):
    command, flags, tail = CASES[script]
    after = launch.run(script, command, "--dry-run", *flags, *tail)
    assert after.returncode == 0 and "+ " in after.stdout, after.stderr
    half = len(flags) // 2 // 2 * 2  # a flag/value boundary
    for args in (("--dry-run", command, *flags), ("--dry-run", *flags, command), (*flags[:half], "--dry-run",
                                                                                    command, *flags[half:])):
        before = launch.run(script, *args, *tail)
        assert (before.returncode, before.stdout, before.stderr) == (0, after.stdout, after.stderr), args


@pytest.mark.parametrize("script", sorted(CASES))
def test_missing_unknown_or_two_subcommands(launch, script):
    command, flags, _ = CASES[script]
    twice = f"one command per call, got '{command}' and 'stop'"
    for args, message in ((("--dry-run", *flags), "missing command; one of: "),
                          (("--dry-run", "launch", *flags), "unknown command 'launch'; one of: "),
                          (("--dry-run", command, *flags, "stop"), twice)):
        r = launch.run(script, *args)
        assert r.returncode == 2 and r.stdout == "" and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1, r.stderr
