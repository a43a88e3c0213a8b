"""Runs one job of prepnet_jax: `python main.py --config=configs/<x>.py --workdir=<dir>`, or the
same with the `prepnet-jax` console command once the package is installed (`pip install -e .`).

Intentionally short (flax examples style): flags, logging, the resolved config saved to the
workdir, and dispatch on `config.task`. Config overrides: `--config.<field>=<value>`; the config
is locked, so a mistyped field is an error.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

# TensorFlow's and XLA's C++ start-up banners (oneDNN, CPU instructions): errors only, unless the
# user chose a level. Set before anything loads their libraries.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow 2.21 prints its "oneDNN custom operations are on" notice whatever the level above.
# Its oneDNN kernels never touch the jobs' numbers (JAX computes; TF only prepares TFDS data and
# writes TensorBoard files), so they are off unless the user sets the variable.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and reports.")
config_flags.DEFINE_config_file("config", None, "ml-collections config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
# Several processes/hosts (jax.distributed.initialize's own argument names). --distributed alone
# lets JAX detect them (TPU pods, SLURM, Open MPI, Kubernetes); any of the others implies it.
flags.DEFINE_bool("distributed", False, "Initialise jax.distributed (cluster auto-detection).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator service.")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts) in the job.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.DEFINE_list("local_device_ids", None, "Devices of this host this process uses (default: all).")


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's INFO chatter (dozens of lines per checkpoint save); its warnings stay."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # The job prints one line per event (progress with ETA, tables); absl's INFO records would
    # repeat them (clu's logging writer, progress) among library chatter. --verbosity=0 shows them.
    logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  config = FLAGS.config
  from prepnet_jax import tasks
  if config.task not in tasks.TENSORFLOW_FREE:
    # TF is only used for TFDS preparation and TensorBoard files: keep it off any GPU JAX needs.
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
  import jax

  from prepnet_jax.runtime import checkpointing, config_checks, jax_settings, rundir
  from prepnet_jax.tasks.config_vocabularies import VOCABULARIES
  if FLAGS.distributed or FLAGS.coordinator_address or FLAGS.num_processes or FLAGS.process_id is not None:
    jax_settings.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
        [int(i) for i in FLAGS.local_device_ids] if FLAGS.local_device_ids else None)
  jax_settings.configure()
  runner = tasks.get_runner(config.task)  # fail fast on an unknown task, before any work
  try:  # every field in its allowed range before any work: one line per bad field, no traceback
    config_checks.validate(config, VOCABULARIES)
  except config_checks.ConfigError as e:
    sys.exit(str(e))
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  os.makedirs(FLAGS.workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(FLAGS.workdir, "config.json"), "w") as f:
      json.dump(config.to_dict(), f, indent=2, default=str)
  try:
    runner(config, FLAGS.workdir)
  except checkpointing.CheckpointCorruptError as e:  # names each bad checkpoint and why
    sys.exit(f"[checkpoint] {e}")
  rundir.write_index(FLAGS.workdir)  # one page of the run's tables and figures (process 0)


def run() -> None:
  """The console command `prepnet-jax` and `python main.py`: absl parses the flags, then `main`."""
  app.run(main)
