"""Prints the jax stack's versions and devices; exits 1 unless jax sees a GPU (launch/gpu_check.sh's probe)."""
import importlib.metadata as md
import sys

PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt", "flax",
            "optax", "orbax-checkpoint")


def main() -> int:
    for p in PACKAGES:
        try:
            print(f"{p}=={md.version(p)}")
        except md.PackageNotFoundError:
            print(f"{p}: not installed")
    import jax

    print("devices:", jax.devices())
    try:
        gpus = jax.devices("gpu")
    except RuntimeError as e:
        print(f"gpu_probe.py: no GPU: {e}", file=sys.stderr)
        return 1
    print(f"{len(gpus)} GPU(s): {gpus[0].device_kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
