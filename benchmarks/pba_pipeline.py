"""Benchmark: images per second of the tf.data training pipeline with PBA's map, old path vs new.

`kd_keras.data.pipeline` (cache, shuffle, batch 64, PBA map over batches,
prefetch) over the embedded digits' training split (28 x 28 x 1: 23 batches
an epoch) and over random CIFAR-sized images (32 x 32 x 3, `--cifar_images`),
read to the end epoch after epoch as Keras `fit` reads it (a new iterator
each epoch). Maps, for three policies (the `rolewise` recipe's hand-set one;
the same with the recipe's final Cutout; every probability 1 at level 5,
1.3 ops per image on average, any of the 15):

- old: the map before the graph-native rewrite, frozen in
  `tests/pba_reference.py` (each batch through `tf.py_function`);
- graph: `PBAAugment`, the map in the dataset's own graph;
- in_process: `PBAAugment(in_process=True)`, the same batch function run
  through `tf.py_function`.

Columns: images/s over whole epochs; the first batch of an epoch (when tf.data
builds the map's graph for the epoch's iterator); images/s after it; the
process's CPU time per batch of 64 over the epoch (all threads: the least
sensitive to other users of the machine). The pipelines are read in turns,
`--repeats` times each, and the best pass counts (per column), so that old and
new are measured side by side under the same load.

Usage:
    PYTHONPATH=. python benchmarks/pba_pipeline.py
"""

import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras.augment import pba  # noqa: E402

# The frozen old map lives with the tests, which check the new one against it.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from pba_reference import ReferencePBAAugment  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 3, "Passes over each pipeline (the best one counts).")
flags.DEFINE_integer("cifar_images", 10_000, "Random 32 x 32 x 3 images in the CIFAR-sized set.")


def one_epoch(dataset):
    """Return images/s over the epoch, seconds to its first batch, images/s after it, CPU s/image."""
    started, cpu = time.perf_counter(), time.process_time()
    iterator = iter(dataset)
    count = len(next(iterator)[0])
    first = time.perf_counter() - started
    rest = 0
    for images, _ in iterator:
        rest += len(images)
    total = time.perf_counter() - started
    cpu = (time.process_time() - cpu) / (count + rest)
    return (count + rest) / total, first, rest / max(total - first, 1e-9), cpu


def main(argv):
    del argv
    digits = kd_keras.data.load_digits().train
    rng = np.random.default_rng(0)
    cifar = (
        rng.uniform(size=(FLAGS.cifar_images, 32, 32, 3)).astype("float32"),
        rng.integers(0, 10, FLAGS.cifar_images),
    )
    every_op = pba.Policy(np.full((15, 2), 10), np.full((15, 2), 5))
    policies = {
        "hand-set": (pba.HAND_SET_POLICY, {}),
        "hand-set + Cutout": (pba.HAND_SET_POLICY, {"cutout": 0.5}),
        "every p = 1": (every_op, {}),
    }
    rows = []
    for data_name, data in (("digits 28x28x1", digits), ("random 32x32x3", cifar)):
        maps = {("no map", ""): None}
        for policy_name, (policy, options) in policies.items():
            maps[(policy_name, "old")] = ReferencePBAAugment(policy, **options)
            maps[(policy_name, "graph")] = pba.PBAAugment(policy, **options)
            maps[(policy_name, "in_process")] = pba.PBAAugment(policy, in_process=True, **options)
        pipelines = {
            key: kd_keras.data.pipeline(data, 64, augment=augment) for key, augment in maps.items()
        }
        for dataset in pipelines.values():
            one_epoch(dataset)  # warm-up: tracing, the function runtime's instantiation
        best = {key: [0.0, float("inf"), 0.0, float("inf")] for key in pipelines}
        for _ in range(FLAGS.repeats):
            for key, dataset in pipelines.items():
                measured = one_epoch(dataset)
                best[key] = [
                    max(best[key][0], measured[0]),
                    min(best[key][1], measured[1]),
                    max(best[key][2], measured[2]),
                    min(best[key][3], measured[3]),
                ]
        for key, measured in best.items():
            rows.append((data_name, *key, *measured))
    print(
        f"{'data':<16} {'policy':<18} {'map':<11} {'images/s':>10} {'first batch':>12} "
        f"{'after it':>10} {'CPU ms/64 images':>17}"
    )
    for data_name, policy_name, map_name, rate, first, rest, cpu in rows:
        print(
            f"{data_name:<16} {policy_name:<18} {map_name:<11} {rate:>10,.0f} "
            f"{first * 1000:>9,.0f} ms {rest:>10,.0f} {cpu * 64_000:>17.1f}"
        )


if __name__ == "__main__":
    app.run(main)
