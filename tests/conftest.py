"""Session-wide test setup.

TensorFlow fixes its device list on first use, so the split of the CPU into two logical devices
(used by the MirroredStrategy tests to exercise the multi-replica code path without a GPU) has
to happen here, before any test touches TensorFlow.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
