"""Runs one job of prepnet_jax: `python main.py --config=configs/<x>.py --workdir=<dir>`.

The flags and the job dispatch are in `prepnet_jax/cli.py` (also the `prepnet-jax` command of
the installed package); `--help` lists them.
"""

from prepnet_jax.cli import run

if __name__ == "__main__":
  run()
